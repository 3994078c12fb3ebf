"""Verification limits per customer that hold across calls and agent replicas.

The per-call limits (:class:`~.identity.IdentityRules`) live in the session state, so a
caller who spoofs a customer's caller ID could ring again for fresh tries at a fact, and
repeated calls could have code after code texted to the customer. These limits count in
the conversation state store's rolling-window counters, which every replica shares:

- ``verify-fail:<customer_id>``: wrong facts given for the customer (each distinct wrong
  answer once, so a redelivered turn or the same guess again counts once); at the limit,
  no fact is even checked, the right one included;
- ``verify-code:<customer_id>``: codes texted to the customer; a slot is reserved before
  a code is sent, atomically, so replicas together never send more than the limit.

Counts simply expire with the window: a successful verification resets nothing.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from dealerline_common.logs import get_logger
from dealerline_common.state_store import StateStore

from ..metrics import AgentMetrics
from .identity import IdentityRules

__all__ = ["CODES_LOCKED", "FACTS_LOCKED", "CustomerLimits", "UNAVAILABLE"]

log = get_logger(__name__)

_AFTERWARDS = (
    "Offer to connect a team member (request_human_agent) or a callback (request_callback)."
)
FACTS_LOCKED = (
    "VERIFICATION_LOCKED: too many wrong answers were given for this customer recently "
    "(on this or other calls), so no plate, VIN or service can verify the caller now. "
    "Offer to text a code to the number on file (send_verification_code); or: " + _AFTERWARDS
)
CODES_LOCKED = (
    "VERIFICATION_LOCKED: too many codes were texted to this customer recently (on this "
    "or other calls); no more can be sent now. " + _AFTERWARDS
)
UNAVAILABLE = "ERROR: verification is not available right now. " + _AFTERWARDS


def _fact_event(fact: str) -> str:
    """The counter's id of a wrong answer: a digest of it (the answer is not stored)."""
    normal = re.sub(r"[^0-9A-Za-z]", "", fact).upper() or fact.strip().lower()
    return hashlib.sha256(f"fact|{normal}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CustomerLimits:
    """The per-customer counters of one agent (its state store, its rules, its metrics).

    Methods raise :class:`~dealerline_common.state_store.StateStoreError` when the store
    cannot answer; the tools then refuse to verify (:data:`UNAVAILABLE`)."""

    store: StateStore
    rules: IdentityRules
    metrics: AgentMetrics | None = None

    async def facts_locked(self, session_id: str, customer_id: int) -> bool:
        """Whether wrong facts for the customer reached the limit within the window."""
        got = await self.store.count_in_window(
            f"verify-fail:{customer_id}", self.rules.customer_window_s
        )
        if got.count < self.rules.customer_failures:
            return False
        self._locked("fact", session_id, customer_id, got.count)
        return True

    async def fact_failed(self, customer_id: int, fact: str) -> int:
        """Count a wrong fact for the customer; the wrong facts still allowed."""
        got = await self.store.count_in_window(
            f"verify-fail:{customer_id}", self.rules.customer_window_s, event=_fact_event(fact)
        )
        return max(0, self.rules.customer_failures - got.count)

    async def take_code(self, session_id: str, customer_id: int) -> bool:
        """Reserve one texted code for the customer; False (locked) when none is left."""
        got = await self.store.count_in_window(
            f"verify-code:{customer_id}",
            self.rules.customer_window_s,
            event=secrets.token_hex(8),
            limit=self.rules.customer_codes,
        )
        if not got.counted:
            self._locked("code", session_id, customer_id, got.count)
        return got.counted

    def _locked(self, kind: str, session_id: str, customer_id: int, count: int) -> None:
        limit = self.rules.customer_failures if kind == "fact" else self.rules.customer_codes
        log.warning(
            "verification locked for customer",
            kind=kind,
            session_id=session_id,
            customer_id=customer_id,
            count=count,
            limit=limit,
            window_s=self.rules.customer_window_s,
        )
        if self.metrics is not None:
            self.metrics.verification_locked.labels(kind=kind).inc()
