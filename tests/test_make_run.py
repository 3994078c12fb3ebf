"""``make run`` from a fresh clone: its entry point starts the whole fleet, answers a signed
Twilio incoming-call webhook with a media stream to the gateway, and stops every process
it started on Ctrl-C / SIGTERM."""

from __future__ import annotations

import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import pytest
from twilio.request_validator import RequestValidator

from dealerline_common.net import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
PUBLIC_URL = "https://dealer.example.com"
READY_LINE = "dealerline is running"
READY_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 60.0
# A real LLM key in the developer's shell would make the fleet call that LLM.
NOT_INHERITED = (
    "AGENT_LLM_BASE_URL",
    "AGENT_LLM_API_KEY",
    "AGENT_LLM_MODEL",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "GATEWAY_HTTP_PORT",
    "GATEWAY_PUBLIC_URL",
    "GATEWAY_TWILIO_AUTH_TOKEN",
)


@dataclass
class Running:
    process: subprocess.Popen[str]
    lines: queue.Queue[str]
    port: int
    auth_token: str
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-6000:]


def _make_run_env(tmp: Path, port: int, auth_token: str) -> dict[str, str]:
    """What ``uv run --frozen`` under the Makefile gives the fleet (the venv first on PATH,
    ``UV_LINK_MODE``), plus this test's own gateway port, auth token and temp folder (the
    fleet's logs, SQLite database and NATS store go under ``TMPDIR``)."""
    venv = Path(sys.executable).parent.parent
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    env.update(
        VIRTUAL_ENV=str(venv),
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        UV_LINK_MODE=env.get("UV_LINK_MODE", "copy"),
        TMPDIR=str(tmp),
        GATEWAY_HTTP_PORT=str(port),
        GATEWAY_TWILIO_AUTH_TOKEN=auth_token,
        GATEWAY_PUBLIC_URL=PUBLIC_URL,
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
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid == pid:
            found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


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
            return "".join(seen)
    pytest.fail(f"make run not ready after {READY_TIMEOUT_S:.0f}s:\n{run.stderr()}")


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[Running]:
    port, token = free_port(), secrets.token_hex(16)
    stderr_path = tmp_path / "fleet.stderr"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "dealerline_cli.run"],
            cwd=REPO,
            env=_make_run_env(tmp_path, port, token),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
    run = Running(process, lines, port, token, stderr_path)
    try:
        yield run
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


def _signed_incoming(run: Running) -> httpx.Response:
    params = {
        "AccountSid": "AC" + "0" * 32,
        "CallSid": "CA" + secrets.token_hex(16),
        "From": "+14155550123",
        "To": "+18005550100",
        "CallStatus": "ringing",
        "Direction": "inbound",
    }
    signature = RequestValidator(run.auth_token).compute_signature(
        f"{PUBLIC_URL}/api/voice/incoming", params
    )
    return httpx.post(
        f"http://127.0.0.1:{run.port}/api/voice/incoming",
        data=params,
        headers={"X-Twilio-Signature": signature},
        timeout=10.0,
    )


def _assert_stream_twiml(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert "xml" in response.headers["content-type"]
    root = ET.fromstring(response.text)
    assert root.tag == "Response"
    stream = root.find("./Connect/Stream")
    assert stream is not None, response.text
    assert stream.get("url", "").startswith("wss://dealer.example.com/"), response.text
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert params.get("session_id") and params.get("token"), response.text
    assert params.get("from") == "+14155550123"


def test_make_run_answers_a_signed_call_and_stops_on_ctrl_c(make_run: Running) -> None:
    banner = _wait_ready(make_run)
    assert f"127.0.0.1:{make_run.port}" in banner
    children = _children(make_run.process.pid)
    assert len(children) >= 9, "nats-server, the scripted LLM and seven services"

    unsigned = httpx.post(
        f"http://127.0.0.1:{make_run.port}/api/voice/incoming",
        data={"CallSid": "CA1"},
        timeout=10.0,
    )
    assert unsigned.status_code == 403
    _assert_stream_twiml(_signed_incoming(make_run))

    make_run.process.send_signal(signal.SIGINT)  # Ctrl-C
    assert make_run.process.wait(STOP_TIMEOUT_S) == 0, make_run.stderr()
    left = [pid for pid in children if _alive(pid)]
    assert left == [], f"processes still running after make run stopped: {left}"
    assert "fleet stopped" in make_run.stderr()
