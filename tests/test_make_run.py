"""``make run`` as a dealership lives with it: its entry point started as a process exactly
as the Makefile starts it (the environment ``uv run`` gives), on a data folder of its own.

One public port serves everything: a simulated call (the phone simulator playing Twilio:
signed webhook, Media Streams through the edge) books an appointment, the human leg's
webhooks reach the escalation service, the dashboard logs a staff member in. Ctrl-C stops
every process; started again on the same folder it keeps the booking, the staff login, the
dashboard's tokens and the generated Twilio token, and does not seed the demo again."""

from __future__ import annotations

import os
import queue
import secrets
import signal
import stat
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import pytest
from dotenv import dotenv_values
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from dealerline_common.db.engine import create_engine_from_url, session_factory
from dealerline_common.db.models import Appointment, AppointmentStatus, Customer
from dealerline_common.db.testing import run_sync
from dealerline_common.net import free_port
from dealerline_sim.demo import CALLER_NUMBER, DEALER_NUMBER, DEMO_LINES
from dealerline_sim.phone import PhoneSimulator, run_script

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[1]
PUBLIC_URL = "https://dealer.example.com"
READY_LINE = "dealerline is running"
READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 60.0
STAFF_EMAIL = "maria.lopez@sunrisemotors.example"
# A developer's shell or .env must not point the fleet at a real LLM, database or Twilio.
NOT_INHERITED = (
    "AGENT_LLM_BASE_URL",
    "AGENT_LLM_API_KEY",
    "AGENT_LLM_MODEL",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "GATEWAY_HTTP_PORT",
    "GATEWAY_PUBLIC_URL",
    "GATEWAY_TWILIO_AUTH_TOKEN",
    "ESCALATION_TWILIO_AUTH_TOKEN",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_FROM_NUMBER",
    "DASHBOARD_AUTH_SECRET",
    "DATABASE_URL",
    "DEALERLINE_DATA_DIR",
)


@dataclass
class Running:
    process: subprocess.Popen[str]
    lines: queue.Queue[str]
    port: int
    data_dir: Path
    stderr_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth_token(self) -> str:
        """The Twilio auth token make run generated and stored (none was configured)."""
        token = dotenv_values(self.data_dir / "secrets.env").get("TWILIO_AUTH_TOKEN")
        assert token, "no TWILIO_AUTH_TOKEN in secrets.env"
        return token

    @property
    def database_url(self) -> str:
        return f"sqlite+aiosqlite:///{self.data_dir / 'dealerline.db'}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-6000:]


def _make_run_env(tmp: Path, port: int) -> dict[str, str]:
    """What ``uv run --frozen`` under the Makefile gives the fleet (the venv first on PATH,
    ``UV_LINK_MODE``), plus this test's public port and temp folder, and no env file."""
    venv = Path(sys.executable).parent.parent
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    env.update(
        VIRTUAL_ENV=str(venv),
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        UV_LINK_MODE=env.get("UV_LINK_MODE", "copy"),
        TMPDIR=str(tmp),
        GATEWAY_HTTP_PORT=str(port),
        GATEWAY_PUBLIC_URL=PUBLIC_URL,
        DEALERLINE_ENV_FILE=os.devnull,
    )
    return env


def _pump(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def _children(pid: int) -> set[int]:
    """Pids whose parent is ``pid`` (the fleet starts its services in sessions of their own,
    so they are not in its process group)."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_line = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat_line.rpartition(")")[2].split()[1])
        if ppid == pid:
            found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat_line = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat_line.rpartition(")")[2].split()[0] != "Z"


def _wait_ready(run: Running) -> str:
    seen: list[str] = []
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if run.process.poll() is not None:
            pytest.fail(f"make run exited with {run.process.returncode}:\n{run.stderr()}")
        try:
            line = run.lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        if READY_LINE in line:
            while not run.lines.empty():  # the rest of the banner
                seen.append(run.lines.get())
            return "".join(seen)
    pytest.fail(f"make run not ready after {READY_TIMEOUT_S:.0f}s:\n{run.stderr()}")


@contextmanager
def make_run(tmp: Path, data_dir: Path, port: int, name: str) -> Iterator[Running]:
    """``dealerline run --data-dir DIR`` as the Makefile runs it; killed
    with everything it started if the test ends before stopping it."""
    stderr_path = tmp / f"{name}.stderr"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "dealerline"), "run", "--data-dir", str(data_dir)],
            cwd=REPO,
            env=_make_run_env(tmp, port),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
    try:
        yield Running(process, lines, port, data_dir, stderr_path)
    finally:
        if process.poll() is None:  # the test failed before stopping it
            children = _children(process.pid)
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            for pid in children:
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)


def _ctrl_c(run: Running, children: set[int]) -> None:
    run.process.send_signal(signal.SIGINT)
    assert run.process.wait(STOP_TIMEOUT_S) == 0, run.stderr()
    left = [pid for pid in children if _alive(pid)]
    assert left == [], f"processes still running after make run stopped: {left}"
    assert "fleet stopped" in run.stderr()


def _signed_post(run: Running, path: str, params: dict[str, str]) -> httpx.Response:
    signature = RequestValidator(run.auth_token).compute_signature(PUBLIC_URL + path, params)
    return httpx.post(
        run.url + path, data=params, headers={"X-Twilio-Signature": signature}, timeout=10.0
    )


def _incoming(run: Running) -> httpx.Response:
    params = {
        "AccountSid": "AC" + "0" * 32,
        "CallSid": "CA" + secrets.token_hex(16),
        "From": CALLER_NUMBER,
        "To": DEALER_NUMBER,
        "CallStatus": "ringing",
        "Direction": "inbound",
    }
    return _signed_post(run, "/api/voice/incoming", params)


def _assert_stream_twiml(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert "xml" in response.headers["content-type"]
    stream = ET.fromstring(response.text).find("./Connect/Stream")
    assert stream is not None, response.text
    assert stream.get("url", "").startswith("wss://dealer.example.com/"), response.text


def _human_leg_webhooks_reach_escalation(run: Running) -> None:
    path = "/api/voice/human-status?session_id=s_makerun&task_id=t1&attempt=1"
    params = {"CallSid": "CA" + "1" * 32, "CallStatus": "ringing", "SequenceNumber": "0"}
    assert _signed_post(run, path, params).status_code == 204  # the escalation service's
    unsigned = httpx.post(run.url + path, data=params, timeout=10.0)
    assert unsigned.status_code == 403, unsigned.text  # its signature check, not a 404


def _set_password(run: Running, password: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dealerline_dashboard", "set-password"]
        + ["--database-url", run.database_url, "--email", STAFF_EMAIL],
        env={**os.environ, "DASHBOARD_NEW_PASSWORD": password, "DEALERLINE_ENV_FILE": os.devnull},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def _log_in(run: Running, password: str) -> str:
    response = httpx.post(
        f"{run.url}/api/auth/login",
        json={"email": STAFF_EMAIL, "password": password},
        timeout=30.0,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _me(run: Running, token: str) -> httpx.Response:
    return httpx.get(
        f"{run.url}/api/me", headers={"Authorization": f"Bearer {token}"}, timeout=10.0
    )


async def _appointments(url: str) -> dict[int, tuple[str | None, AppointmentStatus]]:
    """Appointment id → (customer phone, status)."""
    engine = create_engine_from_url(url)
    try:
        async with session_factory(engine)() as s:
            rows = await s.execute(
                select(Appointment.id, Customer.phone, Appointment.status).join(Customer)
            )
            return {id_: (phone, status) for id_, phone, status in rows.all()}
    finally:
        await engine.dispose()


async def _call_and_book(run: Running) -> None:
    """The demo booking, said through the one public port."""
    async with PhoneSimulator(run.url, PUBLIC_URL, run.auth_token) as sim:
        call = await sim.place_call(CALLER_NUMBER, DEALER_NUMBER)
        async with call:
            turns = await run_script(call, DEMO_LINES, quiet_s=2.5, timeout_s=90.0)
    assert len(turns) == len(DEMO_LINES) + 1
    assert all(t.segments for t in turns), "a turn went unanswered"


def _new_booking(run: Running, before: set[int]) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        new = {
            i: v for i, v in run_sync(_appointments(run.database_url)).items() if i not in before
        }
        if new:
            [(booking, (phone, status))] = new.items()
            assert (phone, status) == (CALLER_NUMBER, AppointmentStatus.BOOKED)
            return booking
        time.sleep(0.5)
    raise AssertionError("the call booked no appointment")


def test_make_run_takes_a_call_on_one_port_and_keeps_its_data_across_a_restart(
    tmp_path: Path,
) -> None:
    port, data_dir, password = free_port(), tmp_path / "var", secrets.token_urlsafe(12)
    with make_run(tmp_path, data_dir, port, "first") as run:
        banner = _wait_ready(run)
        assert f"127.0.0.1:{port}" in banner and "demo dealership was loaded" in banner
        children = _children(run.process.pid)
        assert len(children) >= 10, "nats-server, the scripted LLM, seven services, the edge"
        assert stat.S_IMODE((data_dir / "secrets.env").stat().st_mode) == 0o600

        unsigned = httpx.post(f"{run.url}/api/voice/incoming", data={"CallSid": "CA1"})
        assert unsigned.status_code == 403
        _assert_stream_twiml(_incoming(run))
        _human_leg_webhooks_reach_escalation(run)
        _set_password(run, password)
        token = _log_in(run, password)

        seeded = set(run_sync(_appointments(run.database_url)))
        run_sync(_call_and_book(run))
        booking = _new_booking(run, seeded)
        _ctrl_c(run, children)

    assert (data_dir / "nats" / "jetstream").is_dir()
    with make_run(tmp_path, data_dir, port, "second") as run:
        assert "the dealership's data kept" in _wait_ready(run)
        appointments = run_sync(_appointments(run.database_url))
        assert appointments[booking] == (CALLER_NUMBER, AppointmentStatus.BOOKED)
        assert set(appointments) == seeded | {booking}
        assert _me(run, token).status_code == 200, "a login from before the restart"
        assert _me(run, _log_in(run, password)).json()["email"] == STAFF_EMAIL
        _assert_stream_twiml(_incoming(run))  # the stored Twilio token, reused
        _ctrl_c(run, _children(run.process.pid))
