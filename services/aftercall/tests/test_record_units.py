"""The record's pure parts: outcome precedence, end reasons, merging appointment facts,
turns recovered from the state store, the summary request and the desk's email."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dealerline_aftercall.record.entries import appointment_from_state, merge_appointment
from dealerline_aftercall.record.facts import (
    CallFacts,
    Turn,
    count_barge_ins,
    decide_outcome,
    desk_email,
    end_reason,
    local_time,
    summary_request,
)
from dealerline_aftercall.record.recovery import turns_from_state
from dealerline_common.db.models import Call, CallOutcome, TranscriptTurn
from dealerline_sim.llm import Scenario, render

T0 = datetime(2030, 1, 7, 17, 0, tzinfo=UTC)


def turns(*pairs: tuple[str, str]) -> list[Turn]:
    return [Turn(role, text, T0 + timedelta(seconds=i)) for i, (role, text) in enumerate(pairs)]


ASKED = turns(("agent", "Hello"), ("caller", "When do you open?"), ("agent", "At eight."))
BOOKED = {"action": "booked", "appointment_id": 1, "at": 1.0}
CONNECTED = {"kind": "human_status", "status": "in_conference", "final": False}
FAILED = {"kind": "human_status", "status": "failed", "final": True, "reason": "exhausted"}
NOT_FINAL_FAIL = {"kind": "human_status", "status": "failed", "final": False}
CALLBACK = {"kind": "callback_requested", "callback_id": 3}


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (CallFacts(), CallOutcome.ABANDONED),
        (CallFacts(turns=turns(("agent", "Hello"))), CallOutcome.ABANDONED),
        (CallFacts(turns=turns(("agent", "Hello"), ("caller", "Hi"))), CallOutcome.ABANDONED),
        (CallFacts(turns=ASKED), CallOutcome.ANSWERED),
        (CallFacts(turns=ASKED, callbacks=[CALLBACK]), CallOutcome.CALLBACK_REQUESTED),
        (
            CallFacts(turns=ASKED, escalation=[NOT_FINAL_FAIL], callbacks=[CALLBACK]),
            CallOutcome.CALLBACK_REQUESTED,
        ),
        (
            CallFacts(turns=ASKED, escalation=[FAILED], callbacks=[CALLBACK]),
            CallOutcome.ESCALATION_FAILED,
        ),
        (CallFacts(escalation=[NOT_FINAL_FAIL, CONNECTED]), CallOutcome.ESCALATED),
        (CallFacts(escalation=[CONNECTED, FAILED]), CallOutcome.ESCALATED),
        (
            CallFacts(
                turns=ASKED,
                escalation=[CONNECTED],
                appointments=[{**BOOKED, "action": "cancelled"}],
            ),
            CallOutcome.CANCELLED,
        ),
        (
            CallFacts(
                appointments=[
                    {"action": "rescheduled", "appointment_id": 2, "at": 1.0},
                    {"action": "cancelled", "appointment_id": 3, "at": 2.0},
                ]
            ),
            CallOutcome.RESCHEDULED,
        ),
        (CallFacts(turns=ASKED, appointments=[BOOKED], callbacks=[CALLBACK]), CallOutcome.BOOKED),
        # Booked, then cancelled again in the same call: the net effect is a cancellation.
        (
            CallFacts(appointments=[BOOKED, {**BOOKED, "action": "cancelled", "at": 2.0}]),
            CallOutcome.CANCELLED,
        ),
    ],
)
def test_outcome_precedence(facts: CallFacts, expected: CallOutcome) -> None:
    assert decide_outcome(facts) is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("stop", "hangup"),
        ("customer_hung_up", "hangup"),
        ("hangup:end_call", "end_call"),
        ("hangup:caller_asked", "hangup:caller_asked"),
        ("disconnect", "stream_lost"),
        ("gateway_shutdown", "stream_lost"),
        ("task_failed:receiver", "stream_lost"),
        ("stream_lost", "stream_lost"),
    ],
)
def test_end_reasons(raw: str, expected: str) -> None:
    assert end_reason(raw) == expected


def test_barge_ins_count_interrupted_agent_turns_only() -> None:
    ts = turns(("agent", "a"), ("caller", "b"), ("agent", "c"))
    ts[0].interrupted = ts[1].interrupted = True
    assert count_barge_ins(ts) == 1


def test_the_state_stores_appointment_stands_in_until_its_event_arrives() -> None:
    state_view = appointment_from_state({"id": 5, "service": "Oil", "status": "booked"}, 1.0)
    entries = merge_appointment([], state_view)
    assert [(e["action"], e["source"]) for e in entries] == [("booked", "state")]
    event = {"action": "rescheduled", "appointment_id": 5, "at": 2.0, "source": "event"}
    entries = merge_appointment(entries, event)
    assert [(e["action"], e["source"]) for e in entries] == [("rescheduled", "event")]
    # A later state view of the same appointment changes nothing; a repeat event neither.
    assert merge_appointment(entries, appointment_from_state({"id": 5}, 3.0)) == entries
    assert merge_appointment(entries, dict(event)) == entries
    cancelled = appointment_from_state({"id": 6, "status": "cancelled"}, 4.0)
    assert merge_appointment(entries, cancelled)[-1]["action"] == "cancelled"


def test_turns_missing_from_the_bus_are_recovered_from_the_state_in_order() -> None:
    call = Call(session_id="s", started_at=T0)
    call.turns = [
        TranscriptTurn(role="caller", text="hi", at=T0 + timedelta(seconds=5), turn_id="t1"),
    ]
    messages: list[dict[str, Any]] = [
        {"type": "human", "data": {"content": "[CALL_STARTED]", "id": "g:user"}},
        {"type": "ai", "data": {"content": "Welcome.", "id": "g:ai"}},
        {"type": "human", "data": {"content": "hi", "id": "t1:user"}},
        {"type": "ai", "data": {"content": "", "id": "t1:ai", "tool_calls": [{}]}},
        {"type": "tool", "data": {"content": "ok", "id": "x"}},
        {"type": "ai", "data": {"content": [{"type": "text", "text": "Done."}], "id": "t1:ai:1"}},
        {"type": "human", "data": {"content": "[NOTIFICATION:human_available:Bo]", "id": "n:user"}},
    ]
    found = turns_from_state(messages, call)
    assert [(t.turn_id, t.role, t.text) for t in found] == [
        ("g", "agent", "Welcome."),
        ("t1", "agent", "Done."),
    ]
    assert found[0].at < call.turns[0].at < found[1].at


def test_recovered_turns_follow_the_message_id_scheme_and_skip_markers_and_tools() -> None:
    call = Call(session_id="s", started_at=T0)
    call.turns = []
    messages: list[dict[str, Any]] = [
        {"type": "human", "data": {"content": " [CALL_RESUMED] [DTMF:1] ", "id": "r:user"}},
        {"type": "human", "data": {"content": "I need brakes", "id": "t2:user"}},
        {"type": "ai", "data": {"content": "Checking.", "id": "t2:ai"}},
        {"type": "tool", "data": {"content": "slots", "id": "t2:tool"}},
        {"type": "tool", "data": {"content": "slots", "id": "t2:ai:1"}},
        {"type": "ai", "data": {"content": "Tuesday works.", "id": "t2:ai:2"}},
        {"type": "ai", "data": {"content": "Not a turn.", "id": "summary-1"}},
        {"type": "human", "data": {"content": "Nor this.", "id": None}},
    ]
    found = turns_from_state(messages, call)
    assert [(t.turn_id, t.role, t.text) for t in found] == [
        ("t2", "caller", "I need brakes"),
        ("t2", "agent", "Checking. Tuesday works."),
    ]


def test_local_time_is_the_dealerships_wall_clock() -> None:
    assert (
        local_time("2030-01-08T17:00:00+00:00", "America/Los_Angeles")
        == "Tuesday, January 8 at 9:00 AM"
    )
    assert local_time(None, "UTC") is None


def test_the_summary_request_carries_the_call_and_the_scripted_rule_reads_it() -> None:
    text = summary_request(
        outcome=CallOutcome.BOOKED,
        customer_name="Dana",
        appointments=[{"action": "booked", "appointment_id": 1, "service": "Oil"}],
        callbacks=[],
        turns=turns(("agent", "Hello"), ("caller", "I need an oil change."), ("agent", "Ok")),
        timezone="UTC",
    )
    assert text.splitlines()[:2] == ["Outcome: booked", "Customer: Dana"]
    assert "Caller: I need an oil change." in text
    messages = [
        {"role": "system", "content": "You write call summaries for Sunrise Motors"},
        {"role": "user", "content": text},
    ]
    rule, found = Scenario.load("demo").match(messages)
    reply = render(rule.text(), messages, found)
    assert "I need an oil change." in reply and "booked" in reply and "Dana" in reply


def test_the_desk_email_names_the_caller_the_appointment_and_links_the_call() -> None:
    subject, body = desk_email(
        session_id="sess_1",
        dealership="Sunrise Motors",
        outcome=CallOutcome.CALLBACK_REQUESTED,
        summary="Dana wants a call back.",
        customer_name="Dana",
        caller_phone="+14155550123",
        started_at=T0,
        duration_s=61.4,
        appointments=[
            {
                "action": "booked",
                "appointment_id": 4,
                "service": "Oil",
                "start": "2030-01-08T09:00:00-08:00",
            }
        ],
        callbacks=[{"preferred_window": "after 5pm", "reason": "quote"}],
        timezone="America/Los_Angeles",
        dashboard_url="https://dash.example.com/",
    )
    assert subject == "[Sunrise Motors] Callback requested: Dana"
    assert "Summary: Dana wants a call back." in body
    assert "Caller: Dana, +14155550123" in body
    assert "Appointment: booked Oil on Tuesday, January 8 at 9:00 AM (appointment #4)" in body
    assert "Callback requested: after 5pm (reason: quote)" in body
    assert "https://dash.example.com/#/calls/sess_1" in body
    _, no_link = desk_email(
        session_id="s",
        dealership="D",
        outcome=CallOutcome.BOOKED,
        summary=None,
        customer_name=None,
        caller_phone=None,
        started_at=T0,
        duration_s=None,
        appointments=[],
        callbacks=[],
        timezone="UTC",
        dashboard_url=None,
    )
    assert "#/calls/" not in no_link and "not available yet" in no_link
