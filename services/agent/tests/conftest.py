"""The agent tests' shared helpers (``agent_testkit``) are importable by name, and the
demo dealership's database every test module that runs an agent uses (``dealer_db``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dealerline_common.db.migrate import upgrade
from dealerline_common.db.seed import seed
from dealerline_common.db.testing import run_sync

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="module")
def dealer_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The demo dealership in a SQLite file, migrated and seeded once for the module."""
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('dealer') / 'dealer.db'}"
    run_sync(upgrade(url))
    run_sync(seed(url))
    return url
