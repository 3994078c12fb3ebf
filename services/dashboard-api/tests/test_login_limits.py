"""Login limits against the real service, real Redis (127.0.0.1:6379) and two replicas:
per client address and per (email, address), shared through Redis; X-Forwarded-For
believed only from a trusted proxy; a cap on password checks running at once; and no
way for an outsider to lock a staff member out."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import httpx
import pytest
from dash_testkit import MANAGER, PASSWORD, SALES, Dash
from starlette.requests import HTTPConnection

from dealerline_dashboard.limits import client_ip, parse_networks

REDIS_URL = "redis://127.0.0.1:6379/0"
PROXY = ["127.0.0.1/32"]  # the tests' client is the "proxy" when one is trusted


def shared(**overrides: Any) -> dict[str, Any]:
    """Settings of replicas that share their limits in Redis, under a key space of
    this test's own."""
    return {"state_url": REDIS_URL, "state_namespace": f"test-{secrets.token_hex(6)}:", **overrides}


async def login(
    dash: Dash, email: str, password: str, forwarded_for: str | None = None
) -> httpx.Response:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return await dash.http.post(
        "/api/auth/login", json={"email": email, "password": password}, headers=headers
    )


async def test_an_outsider_cannot_lock_a_staff_member_out(start_dash) -> None:  # type: ignore[no-untyped-def]
    dash: Dash = await start_dash(
        **shared(trusted_proxies=PROXY, login_max_failures=3, login_lockout_s=60)
    )
    attacker, maria = "203.0.113.9", "198.51.100.20"
    for _ in range(3):
        assert (await login(dash, SALES, "guessing-wrong", attacker)).status_code == 401
    refused = await login(dash, SALES, PASSWORD, attacker)  # even the right password
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) > 0
    # Maria, from her own address, logs in as ever: only the attacker's pair is locked.
    assert (await login(dash, SALES, PASSWORD, maria)).status_code == 200
    # …and her own typos are counted apart from the attacker's.
    assert (await login(dash, SALES, "my-typo-typo", maria)).status_code == 401
    assert (await login(dash, SALES, PASSWORD, maria)).status_code == 200
    assert (await login(dash, MANAGER, PASSWORD, attacker)).status_code == 200


async def test_limits_are_shared_by_the_replicas_through_redis(start_dash) -> None:  # type: ignore[no-untyped-def]
    limits = shared(trusted_proxies=PROXY, login_max_failures=2, login_ip_max_attempts=5)
    first: Dash = await start_dash(**limits)
    second: Dash = await start_dash(**limits)
    who = "203.0.113.50"
    assert (await login(first, SALES, "wrong-password", who)).status_code == 401
    assert (await login(second, SALES, "wrong-password", who)).status_code == 401
    # Two failures, one on each replica: the pair is locked on both.
    assert (await login(first, SALES, PASSWORD, who)).status_code == 429
    assert (await login(second, SALES, PASSWORD, who)).status_code == 429
    # Five attempts in all from that address (any email): the sixth is refused anywhere.
    assert (await login(second, MANAGER, PASSWORD, who)).status_code == 200
    for dash in (first, second):
        r = await login(dash, MANAGER, PASSWORD, who)
        assert r.status_code == 429, r.text
        assert int(r.headers["retry-after"]) > 0
    assert (await login(first, MANAGER, PASSWORD, "203.0.113.51")).status_code == 200
    text = (await first.http.get("/metrics")).text
    assert 'dealerline_dashboard_login_failures_total{reason="rate_limited"}' in text


async def test_forwarded_for_counts_only_behind_a_trusted_proxy(start_dash) -> None:  # type: ignore[no-untyped-def]
    # No proxy trusted: a client that makes up X-Forwarded-For is still one address.
    direct: Dash = await start_dash(**shared(login_ip_max_attempts=3))
    codes = [
        (await login(direct, SALES, "wrong-password", f"192.0.2.{i}")).status_code for i in range(4)
    ]
    assert codes == [401, 401, 401, 429]


def connection(peer: str, forwarded_for: str | None) -> HTTPConnection:
    headers = [(b"x-forwarded-for", forwarded_for.encode())] if forwarded_for else []
    return HTTPConnection({"type": "http", "client": (peer, 5555), "headers": headers})


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        ("203.0.113.9", None, "203.0.113.9"),  # no proxy
        ("203.0.113.9", "1.2.3.4", "203.0.113.9"),  # an untrusted peer's header is ignored
        ("10.0.0.5", None, "10.0.0.5"),  # the proxy itself
        ("10.0.0.5", "198.51.100.7", "198.51.100.7"),
        # The client wrote the first one; our proxy appended the real address.
        ("10.0.0.5", "6.6.6.6, 198.51.100.7", "198.51.100.7"),
        # Two of our proxies in a row: the first hop we do not trust is the client.
        ("10.0.0.5", "198.51.100.7, 10.0.0.9", "198.51.100.7"),
        ("10.0.0.5", "not-an-address, 198.51.100.7", "198.51.100.7"),
        ("10.0.0.5", "198.51.100.7, garbage", "10.0.0.5"),
        ("10.0.0.5", "2001:db8::1", "2001:db8::1"),
    ],
)
def test_client_address(peer: str, forwarded_for: str | None, expected: str) -> None:
    trusted = parse_networks(["10.0.0.0/8"])
    assert client_ip(connection(peer, forwarded_for), trusted) == expected


async def test_password_checks_are_capped_and_the_rest_answered_at_once(start_dash) -> None:  # type: ignore[no-untyped-def]
    dash: Dash = await start_dash(login_max_concurrent=2)
    checks = dash.service.dashboard.password_checks
    # Two checks in flight (held here as a slow login would hold them)…
    await checks.acquire()
    await checks.acquire()
    try:
        busy = await login(dash, SALES, PASSWORD)
        assert busy.status_code == 503
        assert busy.headers["retry-after"] == "1"
        assert "try again" in busy.json()["detail"]
    finally:
        checks.release()
        checks.release()
    assert (await login(dash, SALES, PASSWORD)).status_code == 200

    # A burst of real logins: every one is answered, a 200 or a quick 503 (never a
    # queue of 64 MiB checks, never a 500).
    burst = await asyncio.gather(*(login(dash, SALES, PASSWORD) for _ in range(8)))
    codes = [r.status_code for r in burst]
    assert set(codes) <= {200, 503} and 200 in codes, codes
    assert all(r.headers["retry-after"] == "1" for r in burst if r.status_code == 503)


async def test_logins_go_on_when_redis_is_unreachable(start_dash) -> None:  # type: ignore[no-untyped-def]
    dash: Dash = await start_dash(
        state_url="redis://127.0.0.1:1/0", login_max_failures=2, login_lockout_s=60
    )
    assert (await login(dash, SALES, PASSWORD)).status_code == 200
    # …with this replica's own counts.
    for _ in range(2):
        assert (await login(dash, SALES, "wrong-password")).status_code == 401
    assert (await login(dash, SALES, PASSWORD)).status_code == 429
