"""The record a finalize writes: every column it decides (outside the row's lock) and how
they go into the row (under it, once: :meth:`.repo.CallRepo.complete`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dealerline_common.db.models import Call, CallOutcome

from .facts import CallFacts, count_barge_ins


@dataclass
class Draft:
    facts: CallFacts
    outcome: CallOutcome
    customer_name: str | None
    caller_phone: str | None
    customer_id: int | None
    started_at: datetime
    ended_at: datetime
    end_reason: str
    duration_s: float
    summary: str | None = None

    def write(self, row: Call) -> None:
        """Set the record's columns on ``row`` (an end already there wins)."""
        row.ended_at = row.ended_at or self.ended_at
        row.end_reason = row.end_reason or self.end_reason
        row.duration_s = self.duration_s
        row.outcome = self.outcome.value
        row.summary = self.summary
        row.customer_name = self.customer_name
        row.caller_phone = self.caller_phone or row.caller_phone
        row.barge_ins = count_barge_ins(self.facts.turns)
        row.appointments = self.facts.appointments
        row.escalation = self.facts.escalation
        row.latency = sorted(row.latency or [], key=lambda e: e.get("at") or 0.0)

    def desk_facts(self) -> dict[str, Any]:
        """What the service desk's email says about the call."""
        return {
            "outcome": self.outcome,
            "summary": self.summary,
            "customer_name": self.customer_name,
            "caller_phone": self.caller_phone,
            "started_at": self.started_at,
            "duration_s": self.duration_s,
            "appointments": self.facts.appointments,
            "callbacks": self.facts.callbacks,
        }
