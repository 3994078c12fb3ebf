"""``make demo``: one simulated phone call through the whole fleet, printed turn by turn.

The phone simulator plays Twilio (signed webhook, Media Streams), the caller's lines are
spoken with Kokoro in a voice other than the agent's, and what the caller heard is
transcribed back with Whisper. An observer on the bus records what STT heard, what the
agent said and each turn's stage timings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from nats.aio.msg import Msg

from dealerline_cli.fleet import Fleet, TwilioAccount
from dealerline_common import spoken, subjects
from dealerline_common.bus import Bus, headers_of
from dealerline_common.logs import configure_logging
from dealerline_common.messages import (
    LatencyEvent,
    Say,
    Transcript,
    TurnPlayed,
    UtteranceMeta,
    from_header,
    loads,
    parse_control,
    parse_event,
)
from dealerline_common.speculation import EndOfTurnInfo
from dealerline_common.spoken import TEENS, TENS, UNITS

from .aftercall_report import format_email, format_record, format_text, wait_for_record
from .mailbox import Mailbox
from .phone import Call, PhoneSimulator, Transcriber, Turn, run_script
from .twilio_rest import TwilioSim

DEMO_LINES = [
    "Hi, I would like to book an oil change for my car.",
    "Tuesday morning would be great, around nine.",
    "Yes please, book it.",
]
CALLER_NUMBER = "+14155550123"
DEALER_NUMBER = "+18005550100"

STAGES = [
    ("endpointing", "end of speech → utterance published"),
    ("stt", "utterance → transcript"),
    ("llm_first_token", "transcript → first LLM token"),
    ("first_sentence", "first token → first sentence out"),
    ("tts_first_audio", "sentence → first sentence synthesized"),
    ("to_first_media", "synthesized → first media frame sent"),
    ("system", "turn less the LLM's time to its first sentence"),
    ("total", "end of speech → first media frame (turn)"),
    ("greeting", "stream started → first media frame (greeting)"),
]


class BusObserver:
    """Watches one call on the bus: utterances (their headers: why the turn ended, whether
    it was transcribed ahead), transcripts, sentences and latency events."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.utterances: dict[str, UtteranceMeta] = {}  # by utterance id
        self.transcripts: dict[str, list[Transcript]] = {}
        self.says: dict[str, dict[str, list[Say]]] = {}
        self.latency: dict[str, dict[str, LatencyEvent]] = {}
        self.played: dict[str, set[str]] = {}  # turns the gateway played to their end

    async def start(self) -> None:
        await self.bus.subscribe(subjects.ALL_UTTERANCES, self._on_utterance)
        await self.bus.subscribe(subjects.ALL_TRANSCRIPTS, self._on_transcript)
        await self.bus.subscribe(subjects.ALL_SAY, self._on_say)
        await self.bus.subscribe(subjects.ALL_EVENTS, self._on_event)
        await self.bus.subscribe(subjects.ALL_CONTROL, self._on_control)

    async def _on_control(self, msg: Msg) -> None:
        with contextlib.suppress(ValueError):
            message = parse_control(msg.data)
            if isinstance(message, TurnPlayed):
                self.played.setdefault(message.session_id, set()).add(message.turn_id)

    def latest_turn_played(self, session_id: str) -> bool:
        """Whether the agent's latest turn (the last to speak a sentence) was played to
        its end (the gateway's ``TurnPlayed``)."""
        turns = self.says.get(session_id, {})
        return not turns or next(reversed(turns)) in self.played.get(session_id, set())

    async def _on_utterance(self, msg: Msg) -> None:
        try:
            meta = from_header(UtteranceMeta, headers_of(msg))
        except ValueError:
            return  # not ours to judge: the STT worker rejects it
        self.utterances.setdefault(meta.utterance_id, meta)

    async def _on_transcript(self, msg: Msg) -> None:
        t = loads(Transcript, msg.data)
        self.transcripts.setdefault(t.session_id, []).append(t)

    async def _on_say(self, msg: Msg) -> None:
        s = loads(Say, msg.data)
        turn = self.says.setdefault(s.session_id, {}).setdefault(s.turn_id, [])
        if all(x.seq != s.seq for x in turn):
            turn.append(s)

    async def _on_event(self, msg: Msg) -> None:
        event = parse_event(msg.data)
        if isinstance(event, LatencyEvent):
            self.latency.setdefault(event.session_id, {}).setdefault(event.turn_id, event)

    def agent_text(self, session_id: str, turn_id: str) -> str:
        says = sorted(self.says.get(session_id, {}).get(turn_id, []), key=lambda s: s.seq)
        return " ".join(s.text for s in says if s.text).strip()

    def turns_for_utterances(self, session_id: str, utterance_ids: set[str]) -> list[str]:
        turns = self.says.get(session_id, {})
        return [
            turn_id
            for turn_id, says in turns.items()
            if any(s.utterance_id in utterance_ids for s in says)
        ]

    def greeting_turns(self, session_id: str) -> list[str]:
        turns = self.says.get(session_id, {})
        return [t for t, says in turns.items() if all(s.utterance_id is None for s in says)]


@dataclass
class TurnReport:
    index: int
    caller_said: str | None
    stt_heard: str
    agent_answered: str
    caller_heard: str
    latency: LatencyEvent | None
    sim_turn: Turn
    utterance_ids: list[str] = field(default_factory=list)
    turn_ids: list[str] = field(default_factory=list)
    end_of_turn: EndOfTurnInfo | None = None  # why the gateway ended the caller's turn
    speculative: bool | None = None  # STT published a transcript made during the pause

    @property
    def stages_ms(self) -> dict[str, float]:
        return self.latency.stages_ms if self.latency is not None else {}


@dataclass
class CallReport:
    session_id: str
    turns: list[TurnReport]
    call: Call


async def place_scripted_call(
    fleet: Fleet,
    lines: list[str],
    *,
    pace: float = 1.0,
    transcriber: Transcriber | None = None,
    quiet_s: float = 2.5,
    timeout_s: float = 90.0,
) -> CallReport:
    """Place one call through ``fleet`` and say ``lines``; return what happened per turn."""
    transcriber = transcriber or Transcriber()
    bus = Bus(str(fleet.nats_url), "demo-observer")
    await bus.connect()
    observer = BusObserver(bus)
    await observer.start()
    try:
        async with PhoneSimulator(
            fleet.gateway_url, fleet.public_url, fleet.auth_token, pace=pace
        ) as sim:
            # Synthesize the caller's lines first: done during the call, it would compete
            # with the fleet for the CPU and skew the greeting's timings.
            await sim.prepare(*lines)
            call = await sim.place_call(CALLER_NUMBER, DEALER_NUMBER)
            async with call:
                sim_turns = await run_script(
                    call,
                    lines,
                    transcriber,
                    quiet_s=quiet_s,
                    timeout_s=timeout_s,
                    settled=lambda: observer.latest_turn_played(
                        call.custom_parameters.get("session_id", "")
                    ),
                )
            session_id = call.custom_parameters["session_id"]
            await asyncio.sleep(0.3)  # let the last bus messages land
        return CallReport(session_id, _assemble(observer, session_id, sim_turns), call)
    finally:
        await bus.close()


def _assemble(observer: BusObserver, session_id: str, sim_turns: list[Turn]) -> list[TurnReport]:
    reports: list[TurnReport] = []
    transcripts = observer.transcripts.get(session_id, [])
    latency = observer.latency.get(session_id, {})
    starts = [t.caller_started_at for t in sim_turns] + [float("inf")]
    for i, turn in enumerate(sim_turns):
        if turn.caller_text is None:
            turn_ids = observer.greeting_turns(session_id)
            utterance_ids: list[str] = []
            heard_by_stt = ""
        else:
            lo, hi = starts[i] or 0.0, starts[i + 1] or float("inf")
            mine = [
                t
                for t in transcripts
                if t.timings.speech_end is not None and lo <= t.timings.speech_end < hi
            ]
            utterance_ids = [t.utterance_id for t in mine]
            heard_by_stt = " ".join(t.text for t in mine if t.text).strip()
            turn_ids = observer.turns_for_utterances(session_id, set(utterance_ids))
        answered = " ".join(observer.agent_text(session_id, t) for t in turn_ids).strip()
        lat = next((latency[t] for t in turn_ids if t in latency), None)
        metas = [observer.utterances[u] for u in utterance_ids if u in observer.utterances]
        last = metas[-1] if metas else None
        reports.append(
            TurnReport(
                index=i,
                caller_said=turn.caller_text,
                stt_heard=heard_by_stt,
                agent_answered=answered,
                caller_heard=(turn.heard_text or "").strip(),
                latency=lat,
                sim_turn=turn,
                utterance_ids=utterance_ids,
                turn_ids=turn_ids,
                end_of_turn=last.end_of_turn if last is not None else None,
                speculative=(last.transcript is not None) if last is not None else None,
            )
        )
    return reports


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


_NUMBER_WORDS = {w: str(n) for w, n in (UNITS | TEENS | TENS).items()}
_DIGITS_GLUED = re.compile(r"(\d)([a-z])")


def _spoken_form(text: str) -> str:
    """One way to write what is said the same: "nine a.m." and "9am" are both "9 am"
    (``spoken.clean`` folds "a.m." into "am", as the entity judge reads it)."""
    text = _DIGITS_GLUED.sub(r"\1 \2", spoken.clean(text).lower())
    return " ".join(_NUMBER_WORDS.get(w, w) for w in normalise(text).split())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER after both sides are normalised alike (case, punctuation, numbers in digits)."""
    import jiwer

    ref, hyp = _spoken_form(reference), _spoken_form(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(ref, hyp))


def describe_end_of_turn(info: EndOfTurnInfo | None) -> str:
    """``model (expects phone, P(done) 0.82, after 420 ms of silence)``."""
    if info is None:
        return "(not said)"
    parts = [f"expects {info.expects}"] if info.expects else []
    if info.model_prob is not None:
        parts.append(f"P(done) {info.model_prob:.2f}")
    parts.append(f"after {info.silence_ms:.0f} ms of silence")
    return f"{info.reason} ({', '.join(parts)})"


def format_timings(t: TurnReport) -> list[str]:
    """The turn's stage timings, one line each, with why the turn ended and whether its
    transcript was made ahead (speculatively, during the caller's pause)."""
    stages = t.stages_ms
    out = ["  timings (ms)   :"]
    if t.caller_said is not None:
        out.append(f"    end of turn: {describe_end_of_turn(t.end_of_turn)}")
    for key, label in STAGES:
        if t.caller_said is None and key == "llm_first_token":
            label = "LLM request → first LLM token"
        if key == "stt" and t.speculative is not None:
            label += " (speculative)" if t.speculative else " (decoded after the end)"
        if key in stages:
            out.append(f"    {label:<48} {stages[key]:>8.0f}")
    return out


def format_report(report: CallReport) -> str:
    out: list[str] = [f"session {report.session_id}"]
    for t in report.turns:
        title = "greeting" if t.caller_said is None else f"caller turn {t.index}"
        out.append(f"\n── Turn {t.index} ({title}) " + "─" * 40)
        if t.caller_said is not None:
            out.append(f"  caller said    : {t.caller_said}")
            wer = word_error_rate(t.caller_said, t.stt_heard)
            out.append(f"  STT heard      : {t.stt_heard}   (WER {wer:.2f})")
        out.append(f"  agent answered : {t.agent_answered}")
        wer = word_error_rate(t.agent_answered, t.caller_heard)
        out.append(f"  caller heard   : {t.caller_heard}   (WER {wer:.2f})")
        if t.latency is None:
            out.append("  timings        : (no latency event)")
            continue
        out.extend(format_timings(t))
    return "\n".join(out)


async def _main(args: argparse.Namespace) -> int:
    configure_logging("demo", level="WARNING", json=False)
    # The dealership's service desk (a real SMTP server on localhost) and Twilio's REST API
    # (the simulator), so the aftercall service's email and confirmation text are real
    # deliveries that can be shown.
    mailbox = Mailbox().start()
    twilio = await TwilioSim().start()
    try:
        async with Fleet(
            log_dir=Path(args.log_dir) if args.log_dir else None,
            twilio=TwilioAccount(
                account_sid=twilio.account_sid,
                auth_token=twilio.auth_token,
                from_number=DEALER_NUMBER,
                api_base_url=twilio.rest_url,
            ),
            extra_env=mailbox.env(),
        ) as fleet:
            return await _booking_call(fleet, mailbox, twilio)
    finally:
        mailbox.stop()
        await twilio.aclose()


async def _booking_call(fleet: Fleet, mailbox: Mailbox, twilio: TwilioSim) -> int:
    print(f"LLM: {fleet.llm.describe()}", flush=True)
    print("Loading Whisper for the caller's ears ...", flush=True)
    transcriber = Transcriber()
    print(f"Placing a call from {CALLER_NUMBER[:3]}••• to the dealership ...", flush=True)
    call_started = datetime.now(UTC)
    report = await place_scripted_call(fleet, DEMO_LINES, pace=1.0, transcriber=transcriber)
    print(format_report(report), flush=True)
    if not all(t.agent_answered for t in report.turns):
        print("\nsome turn got no answer from the agent", file=sys.stderr)
        return 1
    if report.call.protocol_errors:
        print(f"\nprotocol errors: {report.call.protocol_errors}", file=sys.stderr)
        return 1
    assert fleet.database_url is not None
    rows = await booked_appointments(fleet.database_url, CALLER_NUMBER, since=call_started)
    print("\n── Appointments booked during the call " + "─" * 30, flush=True)
    for row in rows:
        print("  " + "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    if not rows:
        print("no appointment was booked during the call", file=sys.stderr)
        return 1

    print("\nThe caller hung up; waiting for the aftercall service ...", flush=True)
    try:
        record = await wait_for_record(fleet.database_url, report.session_id, timeout_s=60)
        emails = await mailbox.wait_for(1, timeout_s=60)
        texts = await twilio.wait_for_messages(1, to=CALLER_NUMBER, timeout_s=60)
    except TimeoutError as exc:
        print(f"after the call: {exc}", file=sys.stderr)
        return 1
    print("\n" + format_record(record), flush=True)
    for recipients, message in emails:
        print("\n" + format_email(recipients, message), flush=True)
    for text in texts:
        print("\n" + format_text(text), flush=True)
    if record.row["outcome"] != "booked" or not record.row["summary"]:
        print("the call record has no 'booked' outcome or no summary", file=sys.stderr)
        return 1
    return 0


async def booked_appointments(
    database_url: str, phone: str, *, since: datetime
) -> list[dict[str, object]]:
    """The appointments the caller booked during the demo call (made by the agent's
    tools, read back from the dealership database)."""
    from sqlalchemy import select

    from dealerline_common.db.engine import create_engine_from_url, session_factory
    from dealerline_common.db.models import Appointment, Customer

    engine = create_engine_from_url(database_url)
    try:
        async with session_factory(engine)() as session:
            query = (
                select(Appointment)
                .join(Customer, Appointment.customer_id == Customer.id)
                .where(Customer.phone == phone, Appointment.created_at >= since)
            )
            rows = (await session.execute(query)).scalars().all()
            return [
                {
                    "id": a.id,
                    "status": a.status.value,
                    "service_type_id": a.service_type_id,
                    "vehicle_id": a.vehicle_id,
                    "bay_id": a.bay_id,
                    "start_at": a.start_at.isoformat(),
                    "end_at": a.end_at.isoformat(),
                }
                for a in rows
            ]
    finally:
        await engine.dispose()


SCENARIOS = ("booking", "escalation")


def main() -> None:
    parser = argparse.ArgumentParser(description="Place one simulated call through the fleet.")
    parser.add_argument("--log-dir", default="artifacts/demo-logs")
    parser.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="booking",
        help="booking: the caller books an oil change; escalation: the caller asks for a "
        "person, the first salesperson is busy, the second accepts, talks, and hands the "
        "caller back to the AI (the human-call status timeline is printed)",
    )
    args = parser.parse_args()
    if args.scenario == "escalation":
        from .escalation_lab import escalation_demo

        sys.exit(asyncio.run(escalation_demo(Path(args.log_dir))))
    sys.exit(asyncio.run(_main(args)))


if __name__ == "__main__":
    main()
