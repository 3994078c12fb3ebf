"""Fixtures for the Twilio simulator's tests: the fake gateway and escalation apps
(``sim_twilio_kit``) and a running ``TwilioSim`` routed to them."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sim_twilio_kit import ESC_PUBLIC, GW_PUBLIC, TIME_SCALE, TOKEN, FakeApp, started, stopped

from dealerline_sim.twilio_rest import TwilioSim


@pytest.fixture
def order() -> list[str]:
    """One arrival order across both fake apps (HTTP requests and stream start/stop)."""
    return []


@pytest.fixture
async def esc(order: list[str]) -> AsyncIterator[FakeApp]:
    app = FakeApp(ESC_PUBLIC, order)
    await started(app)
    try:
        yield app
    finally:
        await stopped(app)


@pytest.fixture
async def gw(order: list[str]) -> AsyncIterator[FakeApp]:
    app = FakeApp(GW_PUBLIC, order)
    await started(app)
    try:
        yield app
    finally:
        await stopped(app)


@pytest.fixture
async def tw(esc: FakeApp) -> AsyncIterator[TwilioSim]:
    async with TwilioSim(TOKEN, time_scale=TIME_SCALE, routes={ESC_PUBLIC: esc.base}) as sim:
        yield sim
