"""Verification limits per customer across calls and replicas: a caller who spoofs John
Carter's caller ID gets no fresh tries at a fact by calling again, and calls cannot have
code after code texted to John. The real tools on the real dealership database (SQLite,
the demo dealership seeded for a fixed Monday) with the state store's counters on the
in-memory store and on real Redis (redis://127.0.0.1:6379/0, ``DL_TEST_REDIS_URL``), each
call a new session; the texts are collected instead of published."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from agent_testkit import invoke_tool
from redis.asyncio import Redis
from structlog.testing import capture_logs

from dealerline_agent.dealership.context import ToolContext
from dealerline_agent.dealership.effects import apply_effect
from dealerline_agent.dealership.identity import IdentityRules
from dealerline_agent.dealership.limits import CustomerLimits
from dealerline_agent.dealership.repo import Dealership
from dealerline_agent.metrics import AgentMetrics
from dealerline_agent.settings import AgentSettings
from dealerline_common.db import create_engine_from_url, seed, session_factory
from dealerline_common.db.testing import sqlite_db_url_fixture  # noqa: F401
from dealerline_common.messages import EscalationRequest, NotificationJob
from dealerline_common.state import ConversationState
from dealerline_common.state_store import MemoryStateStore, RedisStateStore, StateStore

REDIS_URL = os.environ.get("DL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
LA = ZoneInfo("America/Los_Angeles")
MONDAY = date(2026, 3, 2)
NOW = datetime.combine(MONDAY, time(8, 0), tzinfo=LA).astimezone(UTC)
JOHN = "+14155550123"  # John Carter: 2019 Camry, plate 8ABC123
STRANGER = "+14155550199"
JOHN_PLATE = "8ABC123"
WRONG = ["7ABC123", "123456", "Wheel Alignment", "5XYZ999", "Brake Service", "6DEF456"]


@dataclass
class Dealer:
    """One dealership, one shared store: the agent replicas' common ground."""

    repo: Dealership
    store: StateStore
    metrics: AgentMetrics = field(default_factory=AgentMetrics)
    texts: list[NotificationJob] = field(default_factory=list)
    rules: IdentityRules = field(default_factory=IdentityRules)

    def call(self, caller: str, store: StateStore | None = None) -> Call:
        """A new call (a new session), through ``store`` (another replica) if given."""
        limits = CustomerLimits(store or self.store, self.rules, self.metrics)
        state = ConversationState(
            session_id=f"s-{uuid.uuid4().hex[:8]}", call_sid="CA1", caller_phone=caller
        )
        return Call(self, state, limits)

    def locked(self, kind: str) -> float:
        value = self.metrics.base.registry.get_sample_value(
            "dealerline_agent_verification_locked_total", {"kind": kind}
        )
        return value or 0.0


@dataclass
class Call:
    dealer: Dealer
    state: ConversationState
    limits: CustomerLimits | None
    calls: int = 0

    def context(self) -> ToolContext:
        async def no_escalation(_: EscalationRequest) -> None:
            raise AssertionError("no escalation expected")

        async def publish(job: NotificationJob) -> None:
            self.dealer.texts.append(job)

        return ToolContext(
            session_id=self.state.session_id,
            state=self.state,
            repo=self.dealer.repo,
            clock=lambda: NOW,
            timezone="America/Los_Angeles",
            publish_escalation=no_escalation,
            turn_id=f"turn-{self.calls}",
            publish_notification=publish,
            dealership_name="Sunrise Motors",
            identity_rules=self.dealer.rules,
            limits=self.limits,
        )

    async def run(self, name: str, /, **args: Any) -> str:
        self.calls += 1
        content, effect = await invoke_tool(name, f"call-{self.calls}", self.context(), args)
        apply_effect(self.state, effect)
        return content


async def _redis_store() -> AsyncIterator[Callable[[], StateStore]]:
    """Stores on one namespace of the real Redis (each its own connections: a replica);
    every key of the namespace deleted afterwards."""
    ns = f"dltest:{uuid.uuid4().hex}:"
    opened: list[StateStore] = []

    def open_store() -> StateStore:
        opened.append(RedisStateStore(REDIS_URL, namespace=ns))
        return opened[-1]

    try:
        yield open_store
    finally:
        for s in opened:
            await s.close()
        raw = Redis.from_url(REDIS_URL, decode_responses=True)
        keys = [k async for k in raw.scan_iter(match=f"{ns}*", count=1000)]
        if keys:
            await raw.delete(*keys)
        await raw.aclose()


@pytest.fixture(params=["memory", "redis"])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[], StateStore]]:
    if request.param == "memory":
        memory = MemoryStateStore()
        yield lambda: memory  # one process: every "replica" shares the one store
        return
    async for open_store in _redis_store():
        yield open_store


@pytest.fixture
async def dealer(sqlite_db_url: str, stores: Callable[[], StateStore]) -> AsyncIterator[Dealer]:
    await seed(sqlite_db_url, today=MONDAY)
    repo = Dealership(session_factory(create_engine_from_url(sqlite_db_url)), lambda: NOW)
    yield Dealer(repo, stores())
    await repo.close()


async def test_wrong_facts_across_calls_lock_the_customer(dealer: Dealer) -> None:
    """3 wrong facts on the first call (its own limit), 2 on the second: the customer's 5
    are used up, so even John's real plate verifies no call now, this one or the next."""
    first = dealer.call(JOHN)
    await first.run("lookup_customer")
    for fact in WRONG[:3]:
        assert (await first.run("verify_identity", fact=fact)).startswith("NOT_VERIFIED")
    assert (await first.run("verify_identity", fact=JOHN_PLATE)).startswith("LOCKED")
    second = dealer.call(JOHN)
    await second.run("lookup_customer")
    replies = [await second.run("verify_identity", fact=fact) for fact in WRONG[3:5]]
    assert "(1 tries left)" in replies[0] and "(0 tries left)" in replies[1], replies
    with capture_logs() as logs:
        content = await second.run("verify_identity", fact=JOHN_PLATE)
    assert content.startswith("VERIFICATION_LOCKED") and "request_human_agent" in content
    assert JOHN_PLATE not in content and not second.state.verified
    [line] = [e for e in logs if e["event"] == "verification locked for customer"]
    assert line["kind"] == "fact" and line["count"] == 5 and line["limit"] == 5
    assert "0123" not in repr(line)  # no phone number in the log line
    third = dealer.call(JOHN)
    await third.run("lookup_customer")
    assert (await third.run("verify_identity", fact=JOHN_PLATE)).startswith("VERIFICATION_LOCKED")
    assert (await third.run("list_appointments")).startswith("VERIFICATION_REQUIRED")
    assert dealer.locked("fact") == 2
    # A texted code (to the real number on file) still works for the real John.
    assert (await third.run("send_verification_code")).startswith("CODE_SENT")


async def test_the_same_wrong_answer_counts_once_for_the_customer(dealer: Dealer) -> None:
    """A redelivered turn, or the same guess on another call, gives no new information:
    the customer's count moves only with distinct wrong answers."""
    for _ in range(3):
        call = dealer.call(JOHN)
        await call.run("lookup_customer")
        content = await call.run("verify_identity", fact="7abc 123")
        assert content.startswith("NOT_VERIFIED") and "(2 tries left)" in content
    last = dealer.call(JOHN)
    await last.run("lookup_customer")
    assert (await last.run("verify_identity", fact=JOHN_PLATE)).startswith("VERIFIED")


async def test_codes_across_calls_are_limited(dealer: Dealer) -> None:
    """3 codes on one call (its own limit), 2 on the next: John's 5 are used up."""
    first = dealer.call(STRANGER)
    await first.run("lookup_customer", name="John Carter")
    for _ in range(3):
        assert (await first.run("send_verification_code")).startswith("CODE_SENT")
    second = dealer.call(STRANGER)
    await second.run("lookup_customer", name="John Carter")
    for _ in range(2):
        assert (await second.run("send_verification_code")).startswith("CODE_SENT")
    content = await second.run("send_verification_code")
    assert content.startswith("VERIFICATION_LOCKED") and "request_callback" in content
    third = dealer.call(JOHN)  # even from John's own number: the texts are the same
    await third.run("lookup_customer")
    assert (await third.run("send_verification_code")).startswith("VERIFICATION_LOCKED")
    assert [t.to for t in dealer.texts] == [JOHN] * 5
    assert dealer.locked("code") == 2
    # Another customer's codes are not John's.
    other = dealer.call(STRANGER)
    await other.run("lookup_customer", name="Emily Nguyen")
    assert (await other.run("send_verification_code")).startswith("CODE_SENT")


async def test_concurrent_calls_on_replicas_send_no_more_than_the_limit(
    dealer: Dealer, stores: Callable[[], StateStore]
) -> None:
    """Eight calls at once, spread over two replicas (two stores on the same Redis; one
    store in memory): five codes are texted, the others are refused."""
    replicas = [dealer.store, stores()]
    calls = [dealer.call(STRANGER, replicas[i % 2]) for i in range(8)]
    for call in calls:
        await call.run("lookup_customer", name="John Carter")
    replies = await asyncio.gather(*(c.run("send_verification_code") for c in calls))
    assert sum(r.startswith("CODE_SENT") for r in replies) == 5
    assert sum(r.startswith("VERIFICATION_LOCKED") for r in replies) == 3
    assert len(dealer.texts) == 5


async def test_the_window_rolls(sqlite_db_url: str) -> None:
    """Counts expire with the window (a day by default): afterwards a fact works again."""
    await seed(sqlite_db_url, today=MONDAY)
    repo = Dealership(session_factory(create_engine_from_url(sqlite_db_url)), lambda: NOW)
    clock = [0.0]
    dealer = Dealer(repo, MemoryStateStore(clock=lambda: clock[0]))
    try:
        for facts in (WRONG[:3], WRONG[3:5]):
            call = dealer.call(JOHN)
            await call.run("lookup_customer")
            for fact in facts:
                await call.run("verify_identity", fact=fact)
        call = dealer.call(JOHN)
        await call.run("lookup_customer")
        clock[0] += 86399
        assert (await call.run("verify_identity", fact=JOHN_PLATE)).startswith(
            "VERIFICATION_LOCKED"
        )
        clock[0] += 2
        assert (await call.run("verify_identity", fact=JOHN_PLATE)).startswith("VERIFIED")
    finally:
        await repo.close()


async def test_a_store_that_cannot_count_verifies_nobody(sqlite_db_url: str) -> None:
    """Redis unreachable: no fact is judged and no code is sent (fail closed)."""
    await seed(sqlite_db_url, today=MONDAY)
    repo = Dealership(session_factory(create_engine_from_url(sqlite_db_url)), lambda: NOW)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    store = RedisStateStore(f"redis://127.0.0.1:{port}/0", connect_attempts=1)
    dealer = Dealer(repo, store)
    try:
        call = dealer.call(JOHN)
        await call.run("lookup_customer")
        content = await call.run("verify_identity", fact=JOHN_PLATE)
        assert content.startswith("ERROR: verification is not available")
        assert not call.state.verified
        content = await call.run("send_verification_code")
        assert content.startswith("ERROR: verification is not available")
        assert dealer.texts == []
    finally:
        await store.close()
        await repo.close()


def test_the_limits_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = AgentSettings().identity_rules()
    assert (defaults.customer_failures, defaults.customer_codes) == (5, 5)
    assert defaults.customer_window_s == 86400
    monkeypatch.setenv("AGENT_VERIFY_CUSTOMER_FAILURES", "8")
    monkeypatch.setenv("AGENT_VERIFY_CUSTOMER_CODES", "2")
    monkeypatch.setenv("AGENT_VERIFY_CUSTOMER_WINDOW_S", "3600")
    rules = AgentSettings().identity_rules()
    assert (rules.customer_failures, rules.customer_codes, rules.customer_window_s) == (
        8,
        2,
        3600,
    )
    monkeypatch.setenv("AGENT_VERIFY_CUSTOMER_CODES", "0")
    with pytest.raises(ValueError, match="verify_customer_codes"):
        AgentSettings()
