"""``make run``'s command line, up to where it would start the fleet: a taken port and an
unconfirmed ``--reset-demo`` stop it at once with the fix named, before anything in the
database is changed; a bad ``DATABASE_URL`` says what is wrong with it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select, update

from dealerline_cli.database import prepare
from dealerline_common.db.engine import create_engine_from_url, session_factory
from dealerline_common.db.models import DealershipProfile
from dealerline_common.db.testing import run_sync
from dealerline_common.net import free_port

OURS = "Harbor Auto Group"


def _run(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "DEALERLINE_DATA_DIR", "GATEWAY_HTTP_PORT")
    }
    return subprocess.run(
        [sys.executable, "-m", "dealerline_cli.run", "--data-dir", str(data_dir), *args],
        env={**clean, "DEALERLINE_ENV_FILE": os.devnull, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def _name(url: str, new: str | None = None) -> str:
    engine = create_engine_from_url(url)
    try:
        async with session_factory(engine)() as s:
            if new is not None:
                await s.execute(update(DealershipProfile).values(name=new))
                await s.commit()
            return str(await s.scalar(select(DealershipProfile.name)))
    finally:
        await engine.dispose()


def test_help_names_the_options_a_dealership_needs(tmp_path: Path) -> None:
    done = _run(tmp_path, "--help")
    assert done.returncode == 0, done.stderr
    for option in ("--data-dir", "--port", "--public-url", "--reset-demo", "--yes"):
        assert option in done.stdout
    assert "/api/voice/incoming" in done.stdout


def test_a_taken_port_stops_it_before_the_database_is_touched(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _run(tmp_path / "var", "--port", str(port))
    assert done.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use" in done.stderr
    assert "--port" in done.stderr
    assert not (tmp_path / "var" / "dealerline.db").exists()


def test_reset_demo_is_not_done_unconfirmed(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'dealerline.db'}"
    run_sync(prepare(url))
    run_sync(_name(url, OURS))
    done = _run(tmp_path, "--reset-demo", "--port", str(free_port()))
    assert done.returncode == 1
    assert "add --yes" in done.stderr
    assert run_sync(_name(url)) == OURS


def test_a_database_url_it_cannot_use_is_named(tmp_path: Path) -> None:
    done = _run(tmp_path, "--port", "0", DATABASE_URL="mysql://dealer@db/dealerline")
    assert done.returncode == 1
    assert "DATABASE_URL" in done.stderr and "mysql" in done.stderr
