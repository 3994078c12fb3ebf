"""``python -m dealerline_dashboard set-password``: the command line that gives a staff
member a dashboard login, run as a real process against a real database."""

from __future__ import annotations

import os
import subprocess
import sys

from dash_testkit import SALES
from sqlalchemy import select

from dealerline_common.db.engine import create_engine_from_url, session_factory
from dealerline_common.db.models import Staff
from dealerline_dashboard.auth import verify_password


def run_cli(*args: str, password: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHBOARD_")}
    if password is not None:
        env["DASHBOARD_NEW_PASSWORD"] = password
    return subprocess.run(
        [sys.executable, "-m", "dealerline_dashboard", "set-password", *args],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


async def test_set_password_from_the_command_line(db_url: str) -> None:
    done = run_cli("--email", SALES.upper(), "--database-url", db_url, password="brand new secret")
    assert done.returncode == 0, done.stderr
    assert f"password set for {SALES}" in done.stdout
    engine = create_engine_from_url(db_url)
    try:
        async with session_factory(engine)() as session:
            row = (await session.execute(select(Staff).where(Staff.email == SALES))).scalar_one()
    finally:
        await engine.dispose()
    assert row.password_hash and row.password_hash.startswith("$argon2id$")
    assert await verify_password("brand new secret", row.password_hash)
    assert not await verify_password("correct horse battery staple", row.password_hash)

    unknown = run_cli("--email", "nobody@example.com", "--database-url", db_url, password="x" * 12)
    assert unknown.returncode == 1 and "no staff member has the email" in unknown.stderr
    short = run_cli("--email", SALES, "--database-url", db_url, password="short")
    assert short.returncode == 1 and "at least 10 characters" in short.stderr
    no_password = run_cli("--email", SALES, "--database-url", db_url, password=None)
    assert no_password.returncode != 0 and "DASHBOARD_NEW_PASSWORD" in no_password.stderr
