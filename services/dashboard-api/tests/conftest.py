"""Fixtures of the dashboard-api tests: a migrated and seeded database with staff logins,
and the real service on a real nats-server (see ``dash_testkit``)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

# pytest's importlib mode does not let tests import conftest: the test kit is a plain
# module on sys.path (as in the gateway's and escalation's tests).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dash_testkit import Dash, make_database, start_dashboard

from dealerline_common.local_nats import NatsServer


@pytest.fixture
def db_kind() -> str:
    """Override with ``@pytest.mark.parametrize("db_kind", DATABASE_KINDS)``."""
    return "sqlite"


@pytest.fixture
def db_url(request: pytest.FixtureRequest, db_kind: str, tmp_path: Path) -> str:
    return make_database(request, db_kind, tmp_path)


@pytest.fixture
async def start_dash(
    nats_server: NatsServer, db_url: str, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Dash]]]:
    started: list[Dash] = []

    async def start(**overrides: Any) -> Dash:
        dash = await start_dashboard(nats_server.url, db_url, tmp_path, **overrides)
        started.append(dash)
        return dash

    yield start
    for dash in started:
        await dash.stop()


@pytest.fixture
async def dash(start_dash: Callable[..., Awaitable[Dash]]) -> Dash:
    return await start_dash()
