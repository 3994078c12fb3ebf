"""The REST wrapper over the real twilio client and aiohttp: the base-URL override is used
and an unreachable API is reported as TwilioUnavailable (never as a fact about the call).
Its answers from Twilio's side are exercised against the phone simulator's REST API in the
cross-service tests."""

from __future__ import annotations

import socket

import pytest

from dealerline_escalation.twilio_client import (
    FINAL_CALL_STATUSES,
    TwilioCalls,
    TwilioUnavailable,
    hang_up,
)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_api_is_unavailable_not_a_call_fact() -> None:
    port = _closed_port()
    calls = TwilioCalls(
        "AC" + "0" * 32, "token", api_base_url=f"http://127.0.0.1:{port}/", attempts=2
    )
    try:
        assert calls.client.api.base_url == f"http://127.0.0.1:{port}"
        with pytest.raises(TwilioUnavailable, match="fetch call"):
            await calls.fetch_status("CA" + "1" * 32)
        with pytest.raises(TwilioUnavailable, match="create call"):
            await calls.create_call(
                to="+14155550101",
                from_="+18005550100",
                url="https://esc.example.com/a",
                status_callback="https://esc.example.com/b",
                timeout_s=45,
            )
        with pytest.raises(TwilioUnavailable):
            await hang_up(calls, "CA" + "1" * 32)
    finally:
        await calls.close()


def test_final_statuses_are_twilios() -> None:
    assert {"completed", "busy", "failed", "no-answer", "canceled"} == FINAL_CALL_STATUSES
