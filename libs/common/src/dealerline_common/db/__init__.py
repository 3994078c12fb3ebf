"""The dealership database, shared by the agent, the dashboard and the tools around them.

- :mod:`.models`: SQLAlchemy 2 declarative models (UTC times, cents, E.164 phones);
- :mod:`.engine`: ``DATABASE_URL``, async engines and sessions (PostgreSQL or SQLite);
- :mod:`.migrate`: Alembic migrations shipped inside this package;
- :mod:`.seed`: idempotent loading of a YAML file (the demo dealership);
- :mod:`.dealership_io`: the dealership's data in and out, YAML or CSV, with removal
  (:func:`import_dealership`, :func:`export_dealership`; docs/dealership-data.md);
- :mod:`.testing`: pytest fixtures (a migrated empty database, SQLite and PostgreSQL).

Command line: ``python -m dealerline_common.db {upgrade,seed,reset,current} [--url URL]``.
"""

from .dealership_io import DealershipDataError, export_dealership, import_dealership
from .engine import (
    SQLITE_IMMEDIATE,
    create_engine_from_url,
    database_url_from_env,
    default_database_url,
    display_url,
    session_factory,
)
from .migrate import current_revision, downgrade, head_revision, upgrade
from .phone import InvalidPhone, normalize_phone, try_normalize_phone
from .seed import DEMO_FILE, SeedError, SeedReport, reset, seed

__all__ = [
    "DEMO_FILE",
    "DealershipDataError",
    "SQLITE_IMMEDIATE",
    "InvalidPhone",
    "SeedError",
    "SeedReport",
    "create_engine_from_url",
    "current_revision",
    "database_url_from_env",
    "default_database_url",
    "display_url",
    "downgrade",
    "export_dealership",
    "head_revision",
    "import_dealership",
    "normalize_phone",
    "reset",
    "seed",
    "session_factory",
    "try_normalize_phone",
    "upgrade",
]
