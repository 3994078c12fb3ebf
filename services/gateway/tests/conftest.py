from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gw_testkit import Running, running_gateway

from dealerline_common.local_nats import NatsServer


@pytest.fixture
async def gateway(nats_server: NatsServer) -> AsyncIterator[Running]:
    async with running_gateway(nats_server) as run:
        yield run
