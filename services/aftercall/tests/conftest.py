"""Fixtures of the aftercall tests: the demo dealership in real SQLite and PostgreSQL, the
scripted LLM over real HTTP, a real Redis for the conversation state, a bus client."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dealerline_aftercall.settings import AftercallSettings
from dealerline_common.bus import Bus
from dealerline_common.db.migrate import upgrade
from dealerline_common.db.seed import seed
from dealerline_common.db.testing import DATABASE_KINDS, empty_database, run_sync
from dealerline_common.local_nats import NatsServer
from dealerline_common.state_store import StateStore, state_store_from_url
from dealerline_sim.llm import ScriptedLLM

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def dealer_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo dealership, migrated and seeded once per run."""
    path = tmp_path_factory.mktemp("dealer") / "template.db"
    url = f"sqlite+aiosqlite:///{path}"
    run_sync(upgrade(url))
    run_sync(seed(url))
    return path


@pytest.fixture(params=DATABASE_KINDS)
def dealer_db(request: pytest.FixtureRequest, dealer_template: Path, tmp_path: Path) -> str:
    """The demo dealership for one test: a copy of the seeded SQLite file, or the
    session's PostgreSQL database emptied and seeded again."""
    if request.param == "sqlite":
        path = tmp_path / "dealer.db"
        shutil.copyfile(dealer_template, path)
        return f"sqlite+aiosqlite:///{path}"
    url = empty_database(request, request.param, tmp_path)
    run_sync(seed(url))
    return url


@pytest.fixture
async def llm() -> AsyncIterator[ScriptedLLM]:
    """The packaged demo scenario (its after-call summary rules) without the pacing."""
    from dealerline_sim.llm import Scenario

    scenario = Scenario.load("demo").model_copy(
        update={"first_token_delay_ms": 0, "token_delay_ms": 0}
    )
    async with ScriptedLLM(scenario) as server:
        yield server


@pytest.fixture
def namespace() -> str:
    return f"dl-aftercall-test-{secrets.token_hex(4)}:"


@pytest.fixture
async def state_store(namespace: str) -> AsyncIterator[StateStore]:
    """The conversation state store the agent would write (real Redis)."""
    store = state_store_from_url(REDIS_URL, namespace=namespace)
    yield store
    await store.close()


@pytest.fixture
async def test_bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    bus = Bus(nats_server.url, "aftercall-test", file_storage=False)
    await bus.connect()
    await bus.ensure_streams()
    yield bus
    await bus.close()


@pytest.fixture
def make_settings(nats_server: NatsServer, dealer_db: str, llm: ScriptedLLM, namespace: str) -> Any:
    def build(**overrides: Any) -> AftercallSettings:
        values: dict[str, Any] = {
            "nats_url": nats_server.url,
            "http_host": "127.0.0.1",
            "http_port": 0,
            "js_file_storage": False,
            "drain_timeout_s": 3.0,
            "database_url": dealer_db,
            "state_url": REDIS_URL,
            "state_namespace": namespace,
            "llm_base_url": llm.base_url,
            "llm_model": "scripted",
            "llm_timeout_s": 5.0,
            "dashboard_url": "https://dash.example.com",
            "end_grace_s": 0.2,
            "sweep_interval_s": 0.3,
            "record_ack_wait_s": 2.0,
        }
        values.update(overrides)
        return AftercallSettings(**values)

    return build
