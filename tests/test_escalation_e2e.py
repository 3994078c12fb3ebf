"""Human escalation end to end: every path through the human-call state machine, each a
full simulated phone call through the real fleet (real nats-server, every service its own
process, the embedded Whisper and Kokoro models, the scripted LLM over HTTP) with Twilio
played by the simulator: REST calls from the real twilio client, scripted staff answering
(or not) and pressing keys, signed status callbacks, conference rooms, redirects of the
customer's call and the new Media Stream back to the AI.

Each test asserts the sequence of human-call states published on the bus, what the caller
heard (transcribed with Whisper), what the conference held, and the final state in the
conversation store. One fleet serves the whole module (starting it loads the models).
"""

from __future__ import annotations

import difflib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from dealerline_cli.fleet import ESCALATION_WEBHOOK_PATHS, LlmChoice
from dealerline_common.messages import EscalationStatus, HumanCallStatus
from dealerline_sim.demo import normalise
from dealerline_sim.escalation_lab import (
    CALLER_NUMBER,
    DEALER_NUMBER,
    EscalationCall,
    EscalationLab,
    reached,
)
from dealerline_sim.humans import HumanScript
from dealerline_sim.phone import new_sid
from dealerline_sim.twilio_rest import TwilioSim

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

S = HumanCallStatus
WATCHDOG_S = 2.0
ACCEPTED_PATH = [S.CALLING, S.RINGING, S.WAITING_CONFIRMATION, S.CONFIRMED, S.IN_CONFERENCE]


@pytest.fixture(autouse=True)
def no_leaked_tasks() -> None:
    """The lab (simulator, phone, bus) lives for the whole module, so its tasks outlive a
    test by design; each test checks instead that the simulator settled (every leg ended,
    every callback delivered)."""
    return


@pytest.fixture(scope="module")
def artifacts() -> Path:
    path = Path("artifacts") / "escalation"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lab(artifacts: Path) -> AsyncIterator[EscalationLab]:
    scripted = LlmChoice(base_url=None, api_key=None, model="scripted", scripted=True)
    async with EscalationLab(
        log_dir=artifacts / "logs", llm=scripted, watchdog_interval_s=WATCHDOG_S, pace=2.0
    ) as lab:
        yield lab


def phones(lab: EscalationLab) -> tuple[str, str, str]:
    maria, david, priya = (s.phone for s in lab.staff[:3])
    return maria, david, priya


def save(artifacts: Path, name: str, run: EscalationCall) -> None:
    lines = [f"session {run.session_id}", *run.timeline(), ""]
    lines += [f"stream {i + 1} heard: {text}" for i, text in enumerate(run.heard)]
    (artifacts / f"{name}.txt").write_text("\n".join(lines) + "\n")


def attempts(run: EscalationCall) -> dict[int, list[HumanCallStatus]]:
    out: dict[int, list[HumanCallStatus]] = {}
    for s in run.statuses:
        out.setdefault(s.attempt, []).append(s.status)
    return out


def final(run: EscalationCall) -> EscalationStatus:
    assert run.final is not None, run.timeline()
    return run.final


def heard(run: EscalationCall, stream: int) -> str:
    return normalise(run.heard[stream - 1])


def heard_name(name: str, text: str) -> bool:
    """Whether every word of ``name`` was heard, allowing one letter's mishearing a word
    (tiny.en hears the synthesised "Maria" as "Mario" now and then)."""
    words = text.split()
    return all(
        any(difflib.SequenceMatcher(None, part, w).ratio() >= 0.8 for w in words)
        for part in normalise(name).split()
    )


def assert_settled_in_store(run: EscalationCall, status: HumanCallStatus) -> None:
    assert run.state is not None
    assert run.state.escalation is not None
    assert run.state.escalation.status is status
    assert run.state.escalation_in_progress is False


def assert_connected_and_returned(run: EscalationCall, staff_phone: str, name: str) -> None:
    """The caller talked to ``name`` in the conference, then came back to the AI."""
    f = final(run)
    assert (f.status, f.reason) == (S.COMPLETED, "human_ended")
    path = [s for s in run.statuses if s.attempt == f.attempt]
    assert [s.status for s in path][-3:] == [S.CONFIRMED, S.IN_CONFERENCE, S.COMPLETED]
    assert heard_name(name, heard(run, 1)), (name, heard(run, 1))
    assert "connecting you" in heard(run, 1)
    assert "welcome back" in heard(run, 2)
    assert len(run.call.streams) == 2
    assert run.call.streams[1].parameters.get("resumed") == "true"
    assert run.call.streams[0].end_reason == "redirect"  # moved by REST into the conference
    (human,) = [leg for leg in run.legs_to(staff_phone) if "in-progress" in leg.statuses]
    assert run.conference is not None
    assert run.conference.held_together(run.call.call_sid, human.sid)
    assert human.pressed == ["5", "1"]
    assert_settled_in_store(run, S.COMPLETED)
    assert run.state is not None and run.state.escalation is not None
    assert run.state.escalation.staff_name == name


async def test_accepted_call_is_bridged_then_the_caller_returns_to_the_ai(
    lab: EscalationLab, artifacts: Path
) -> None:
    maria, _, _ = phones(lab)
    run = await lab.run({maria: HumanScript.accepts_then_hangs_up(talk_s=8)})
    save(artifacts, "accepted", run)
    assert run.sequence == [*ACCEPTED_PATH, S.COMPLETED]
    assert_connected_and_returned(run, maria, "Maria Lopez")
    (leg,) = run.staff_legs
    # the person heard who is calling and why before accepting
    said = " ".join(lab.sim.said_to(leg.sid)).lower()
    assert "press" in said
    assert "john carter needs help with a question about their car" in said
    assert leg.statuses[-1] == "completed"


@pytest.mark.parametrize(
    "room_callbacks",
    [
        pytest.param("delivered", id="room-callbacks"),
        pytest.param("dropped", id="room-callbacks-lost-watchdog"),
    ],
)
async def test_caller_hanging_up_in_the_conference_ends_the_human_leg(
    lab: EscalationLab, artifacts: Path, room_callbacks: str
) -> None:
    """The caller hangs up while talking to the team member: the room ends (the caller's
    leg has endConferenceOnExit), the person's leg ends, the escalation is COMPLETED.
    With every conference callback lost it ends the same: the person's own call status
    (callback or watchdog) and the caller's call status (watchdog) still tell."""
    maria, _, _ = phones(lab)

    def lose_room_callbacks(sim: TwilioSim) -> None:
        sim.faults.drop(kind="conference", times=None)

    run = await lab.run(
        {maria: HumanScript.accepts_customer_hangs_up_first()},
        hang_up_at=S.IN_CONFERENCE,
        faults=lose_room_callbacks if room_callbacks == "dropped" else None,
    )
    save(artifacts, f"caller_hangs_up_in_conference_{room_callbacks}", run)
    assert run.sequence == [*ACCEPTED_PATH, S.COMPLETED]
    assert (final(run).status, final(run).reason) == (S.COMPLETED, "customer_hung_up")
    (leg,) = run.staff_legs
    assert run.conference is not None
    assert run.conference.held_together(run.call.call_sid, leg.sid)
    assert run.conference.status == "completed"
    assert leg.statuses[-1] == "completed"
    assert len(run.call.streams) == 1  # never back to the AI
    assert "connecting you" in heard(run, 1)
    assert_settled_in_store(run, S.COMPLETED)
    room_events = [
        e for e in lab.sim.events("callback") if e.get("conference_sid") == run.conference.sid
    ]
    assert bool(room_events) is (room_callbacks == "delivered")


@pytest.mark.parametrize(
    ("first", "twilio_status"),
    [
        pytest.param(HumanScript.busy(), "busy", id="busy"),
        pytest.param(HumanScript.never_answers(), "no-answer", id="no-answer"),
        pytest.param(HumanScript.fails(), "failed", id="failed"),
    ],
)
async def test_unreachable_person_moves_on_to_the_next(
    lab: EscalationLab, artifacts: Path, first: HumanScript, twilio_status: str
) -> None:
    maria, david, _ = phones(lab)
    run = await lab.run({maria: first, david: HumanScript.accepts_then_hangs_up(talk_s=8)})
    save(artifacts, f"moves_on_{twilio_status}", run)
    by_attempt = attempts(run)
    assert by_attempt[1][0] is S.CALLING and by_attempt[1][-1] is S.FAILED
    assert S.CONFIRMED not in by_attempt[1]
    first_failure = next(s for s in run.statuses if s.status is S.FAILED)
    assert not first_failure.final and first_failure.staff_name == "Maria Lopez"
    assert by_attempt[2] == [*ACCEPTED_PATH, S.COMPLETED]
    (maria_leg,) = run.legs_to(maria)
    assert maria_leg.statuses[-1] == twilio_status
    assert_connected_and_returned(run, david, "David Kim")


@pytest.mark.parametrize(
    ("first", "why"),
    [
        pytest.param(HumanScript.call_screening(), "no key pressed", id="screening"),
        pytest.param(HumanScript.presses_then_declines(), "declined", id="declined"),
    ],
)
async def test_answered_but_not_accepted_moves_on_to_the_next(
    lab: EscalationLab, artifacts: Path, first: HumanScript, why: str
) -> None:
    maria, david, _ = phones(lab)
    run = await lab.run({maria: first, david: HumanScript.accepts_then_hangs_up(talk_s=8)})
    save(artifacts, f"not_accepted_{first.name}", run)
    by_attempt = attempts(run)
    # Maria's phone was answered (by a person or a screener) but she never accepted
    assert by_attempt[1][:3] == [S.CALLING, S.RINGING, S.WAITING_CONFIRMATION]
    assert by_attempt[1][-1] is S.FAILED and S.CONFIRMED not in by_attempt[1]
    (maria_leg,) = run.legs_to(maria)
    assert maria_leg.statuses[-1] == "completed"
    assert maria_leg.participant is None, f"{why}: never joined the conference"
    assert maria_leg.pressed == ([] if first.name == "call_screening" else ["5", "2"])
    assert_connected_and_returned(run, david, "David Kim")


async def test_nobody_reachable_the_caller_is_offered_a_callback(
    lab: EscalationLab, artifacts: Path
) -> None:
    maria, david, priya = phones(lab)
    run = await lab.run(
        {
            maria: HumanScript.busy(),
            david: HumanScript.call_screening(),
            priya: HumanScript.presses_then_declines(),
        }
    )
    save(artifacts, "exhausted", run)
    f = final(run)
    assert (f.status, f.reason) == (S.FAILED, "exhausted")
    assert sorted(attempts(run)) == [1, 2, 3]
    assert all(a[-1] is S.FAILED for a in attempts(run).values())
    assert [s.final for s in run.statuses].count(True) == 1
    assert [leg.to_number for leg in run.staff_legs] == [maria, david, priya]
    assert run.conference is None
    assert len(run.call.streams) == 1
    text = heard(run, 1)
    assert "couldn't reach anyone" in text or "could not reach anyone" in text
    assert "call you back" in text
    assert_settled_in_store(run, S.FAILED)


async def test_caller_hanging_up_while_staff_rings_cancels_the_call(
    lab: EscalationLab, artifacts: Path
) -> None:
    maria, david, _ = phones(lab)
    run = await lab.run(
        {maria: HumanScript.never_answers(), david: HumanScript.accepts_then_hangs_up()},
        hang_up_at=S.RINGING,
    )
    save(artifacts, "caller_hangs_up_while_ringing", run)
    f = final(run)
    assert (f.status, f.reason) == (S.FAILED, "customer_hung_up")
    (maria_leg,) = run.staff_legs  # nobody else was rung
    assert maria_leg.to_number == maria
    assert maria_leg.statuses[-1] == "canceled"
    assert maria_leg.answered_sim_s is None
    assert run.conference is None
    assert_settled_in_store(run, S.FAILED)


async def test_a_dropped_completed_callback_is_caught_by_the_watchdog(
    lab: EscalationLab, artifacts: Path
) -> None:
    maria, david, _ = phones(lab)

    def drop_marias_completed(sim: TwilioSim) -> None:
        sim.faults.drop(status="completed", to=maria, kind="call")

    run = await lab.run(
        {maria: HumanScript.call_screening(), david: HumanScript.accepts_then_hangs_up(talk_s=8)},
        faults=drop_marias_completed,
    )
    save(artifacts, "watchdog", run)
    (maria_leg,) = run.legs_to(maria)
    (dropped,) = lab.sim.events("callback_dropped", maria_leg.sid)
    assert dropped.call_sid == maria_leg.sid and dropped.get("status") == "completed"
    # No callback said Maria's call ended; the watchdog's fetch did, within two periods.
    failed = next(s for s in run.statuses if s.status is S.FAILED and s.attempt == 1)
    assert failed.at - dropped.at <= 2 * WATCHDOG_S, run.timeline()
    assert attempts(run)[2] == [*ACCEPTED_PATH, S.COMPLETED]
    assert_connected_and_returned(run, david, "David Kim")


async def test_duplicated_and_reordered_callbacks_end_the_same(
    lab: EscalationLab, artifacts: Path
) -> None:
    maria, _, _ = phones(lab)

    def shuffle(sim: TwilioSim) -> None:
        sim.faults.reorder(status="ringing", to=maria, kind="call")  # arrives after in-progress
        sim.faults.duplicate(to=maria, kind="call", times=None, copies=3)

    run = await lab.run({maria: HumanScript.accepts_then_hangs_up(talk_s=8)}, faults=shuffle)
    save(artifacts, "duplicated_reordered", run)
    (leg,) = run.staff_legs
    delivered = [cb["CallStatus"] for cb in lab.sim.callbacks(leg.sid)]
    assert delivered.index("ringing") > delivered.index("in-progress"), delivered
    assert delivered.count("completed") == 3
    # Out of order, "ringing" came after "in-progress": it is ignored (no downgrade), so
    # RINGING is skipped; every state at most once, in the machine's order, and the final
    # state is the same as in order.
    order = [*ACCEPTED_PATH, S.COMPLETED]
    assert run.sequence == [s for s in order if s in run.sequence]
    assert run.sequence == [s for s in order if s is not S.RINGING]
    assert_connected_and_returned(run, maria, "Maria Lopez")


async def test_escalation_service_crash_in_the_conference_loses_nothing(
    lab: EscalationLab, artifacts: Path
) -> None:
    """The escalation service is killed (SIGKILL) while the caller talks to the team member
    and started again: the unacknowledged request is taken up again from the state, the
    room's callbacks reach the new process, and the caller comes back to the AI once."""
    maria, _, _ = phones(lab)

    async def crash(session_id: str) -> None:
        await lab.statuses.wait(session_id, reached(S.IN_CONFERENCE), 60.0, "IN_CONFERENCE")
        await lab.fleet.restart("escalation")

    run = await lab.run({maria: HumanScript.accepts_then_hangs_up(talk_s=120)}, during=crash)
    save(artifacts, "escalation_crash", run)
    assert run.sequence == [*ACCEPTED_PATH, S.COMPLETED]  # each state once
    assert_connected_and_returned(run, maria, "Maria Lopez")
    (leg,) = run.staff_legs
    assert leg.statuses[-1] == "completed"


async def test_every_webhook_rejects_a_forged_signature(lab: EscalationLab) -> None:
    """The human leg's webhooks (escalation service) and the customer leg's (gateway), on
    the running fleet: a forged or missing signature is refused with 403, the genuine
    signature over the same request is not."""
    params = lab.phone.incoming_call_params(new_sid("CA"), CALLER_NUMBER, DEALER_NUMBER)
    query = "?session_id=sess_forged&task_id=t1&attempt=1"
    gateway_paths = ["/api/voice/incoming", "/api/voice/escalate", "/api/voice/return-to-ai"]
    async with httpx.AsyncClient(timeout=10.0) as http:
        for path in [*ESCALATION_WEBHOOK_PATHS, *gateway_paths]:
            public = f"{lab.fleet.public_url}{path}{query}"
            local = lab.sim.webhooks.local_url(public)  # the fleet's routes, as Twilio uses them
            forged = lab.phone.forged_signature(public, params)
            resp = await http.post(local, data=params, headers={"X-Twilio-Signature": forged})
            assert resp.status_code == 403, (path, resp.status_code, resp.text)
            unsigned = await http.post(local, data=params)
            assert unsigned.status_code == 403, (path, unsigned.status_code)
            good = lab.sim.webhooks.sign(public, params)
            ok = await http.post(local, data=params, headers={"X-Twilio-Signature": good})
            assert ok.status_code != 403, (path, ok.status_code, ok.text)
