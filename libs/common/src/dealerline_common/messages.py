"""Every message that crosses the bus, as a versioned pydantic model.

Rules (docs/architecture.md, "The bus"):
- each JSON message carries a ``type`` string ``dealerline.<name>.v<N>``; a reader that
  meets an unknown type rejects it instead of guessing;
- audio travels as the raw payload of a NATS message, never base64 in JSON; its metadata
  rides in the ``Dl-Meta`` header as one of the ``*Meta`` models below.

Times are wall-clock seconds since the epoch (``time.time()``), so that stages measured
in different processes line up on one timeline.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from .speculation import EndOfTurnInfo, Expects, SpeculativeTranscript
from .wire import META_HEADER as META_HEADER
from .wire import Wire as Wire
from .wire import from_header as from_header
from .wire import loads as loads
from .wire import new_id as new_id
from .wire import now as now

# --------------------------------------------------------------------------- timings


class TurnTimings(Wire):
    """Stage timestamps of one turn, filled in hop by hop as the turn crosses the fleet."""

    stream_started: float | None = None  # a call-start/resume turn: the media stream began
    speech_started: float | None = None
    speech_end: float | None = None  # gateway: last voiced frame of the caller
    utterance_published: float | None = None  # gateway: endpointed, sent to STT
    stt_started: float | None = None
    transcript_published: float | None = None  # stt
    llm_request: float | None = None  # agent: request sent to the LLM
    first_token: float | None = None  # agent: first content token from the LLM
    first_sentence: float | None = None  # agent: first sentence published on `say`
    tts_started: float | None = None
    first_audio: float | None = None  # tts: first sentence synthesized and published
    first_media: float | None = None  # gateway: first media frame of the reply sent
    speculation_started: float | None = None  # gateway: the transcript of the turn began

    def stages_ms(self) -> dict[str, float]:
        """Durations in milliseconds of each stage present, plus the whole turn."""
        pairs = {
            "endpointing": (self.speech_end, self.utterance_published),
            "stt": (self.utterance_published, self.transcript_published),
            "llm_first_token": (self.transcript_published or self.llm_request, self.first_token),
            "first_sentence": (self.first_token, self.first_sentence),
            "tts_first_audio": (self.first_sentence, self.first_audio),
            "to_first_media": (self.first_audio, self.first_media),
            "total": (self.speech_end, self.first_media),
            "greeting": (self.stream_started, self.first_media),
        }
        stages = {
            name: round((b - a) * 1000.0, 1)
            for name, (a, b) in pairs.items()
            if a is not None and b is not None
        }
        llm = (self.llm_request, self.first_sentence)
        if "total" in stages and llm[0] is not None and llm[1] is not None:
            # What the system adds to the LLM: end of speech → first frame, less the
            # LLM's time to its first sentence.
            stages["system"] = round(stages["total"] - (llm[1] - llm[0]) * 1000.0, 1)
        return stages


# --------------------------------------------------------------------------- speech path


class UtteranceMeta(Wire):
    """Header of ``call.<sid>.utterance``; the payload is 8 kHz mu-law audio."""

    type: Literal["dealerline.utterance.v1"] = "dealerline.utterance.v1"
    session_id: str
    utterance_id: str
    call_sid: str | None = None
    index: int = Field(ge=0, description="utterance number within the call")
    sample_rate: int = 8000
    encoding: Literal["audio/x-mulaw"] = "audio/x-mulaw"
    duration_ms: float
    during_playback: bool = False
    timings: TurnTimings
    # Transcribed already, while the gateway waited for the end of the turn, from
    # exactly this audio: STT publishes it as the transcript without decoding again.
    transcript: SpeculativeTranscript | None = None
    end_of_turn: EndOfTurnInfo | None = None  # why the gateway ended the turn there


class Transcript(Wire):
    """``call.<sid>.transcript``: what STT heard in one utterance."""

    type: Literal["dealerline.transcript.v1"] = "dealerline.transcript.v1"
    session_id: str
    utterance_id: str
    text: str
    language: str | None = None
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    no_speech_prob: float | None = None
    audio_ms: float
    stt_ms: float
    model: str
    timings: TurnTimings


class Say(Wire):
    """``call.<sid>.say``: one sentence of a reply for TTS.

    The sentence that ends a turn is followed by a ``last=True`` message with empty text,
    because the agent only knows a reply is over when the LLM stream ends.
    """

    type: Literal["dealerline.say.v1"] = "dealerline.say.v1"
    session_id: str
    turn_id: str
    utterance_id: str | None = None  # the caller utterance this turn answers, if any
    seq: int = Field(ge=0)
    text: str
    last: bool = False
    timings: TurnTimings = Field(default_factory=TurnTimings)
    # What the turn asks the caller for, on its closing (``last``) message: the gateway
    # waits for that entity to be complete before it ends the caller's next turn.
    expects: Expects | None = None
    # The voice the dealership's profile asks for (a name in the TTS worker's voice pack,
    # e.g. "af_heart"); None = the worker's default. A worker without that voice speaks
    # with its default and logs that once.
    voice: str | None = Field(default=None, max_length=64)


class AudioMeta(Wire):
    """Header of ``call.<sid>.audio``; the payload is 8 kHz mu-law for one sentence."""

    type: Literal["dealerline.audio.v1"] = "dealerline.audio.v1"
    session_id: str
    turn_id: str
    utterance_id: str | None = None
    seq: int = Field(ge=0)
    last: bool
    text: str
    sample_rate: int = 8000
    encoding: Literal["audio/x-mulaw"] = "audio/x-mulaw"
    duration_ms: float
    synth_ms: float
    timings: TurnTimings = Field(default_factory=TurnTimings)
    expects: Expects | None = None  # copied from the ``Say``


# --------------------------------------------------------------------------- control lane


class StreamStarted(Wire):
    """A media stream for the session began (first one, or resumed after a human leg)."""

    type: Literal["dealerline.control.stream_started.v1"] = "dealerline.control.stream_started.v1"
    session_id: str
    call_sid: str
    stream_sid: str
    resumed: bool = False
    reason: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    at: float = Field(default_factory=now)
    # This gateway took the call's incoming webhook, published :class:`CallIncoming` and
    # holds the greeting's audio as it comes: the agent does not greet again.
    greeting_prefetched: bool = False


class CallIncoming(Wire):
    """The incoming-call webhook was answered: the agent writes the greeting now, so that
    it is spoken the moment the media stream opens (turn id ``conversation.
    turn_id_for_call``)."""

    type: Literal["dealerline.control.call_incoming.v1"] = "dealerline.control.call_incoming.v1"
    session_id: str
    call_sid: str
    from_number: str | None = None
    to_number: str | None = None
    at: float = Field(default_factory=now)


class StreamStopped(Wire):
    type: Literal["dealerline.control.stream_stopped.v1"] = "dealerline.control.stream_stopped.v1"
    session_id: str
    call_sid: str | None = None
    # A call has several streams over its life (a human leg in between); a stop that
    # arrives after the next stream started must not end the new one.
    stream_sid: str | None = None
    # "handoff": the call was moved into the human conference (not ended); a new stream
    # with ``resumed=True`` follows when it comes back to the AI.
    reason: Literal["stop", "disconnect", "error", "handoff"] = "stop"
    at: float = Field(default_factory=now)


class BargeIn(Wire):
    """The caller spoke over playback: the turn is cancelled, only ``heard_text`` was heard."""

    type: Literal["dealerline.control.barge_in.v1"] = "dealerline.control.barge_in.v1"
    session_id: str
    turn_id: str
    heard_text: str
    heard_seqs: list[int] = Field(default_factory=list)
    at: float = Field(default_factory=now)


class KeyPresses(Wire):
    """A run of keys the caller pressed on the customer leg (Media Streams ``dtmf``
    events), grouped by the gateway: a run ends at ``#`` (kept in ``digits``), at 32
    keys, or when no key follows for a while. ``run`` numbers a stream's runs from 1, so
    ``(stream_sid, run)`` names one run of one call."""

    type: Literal["dealerline.control.keys.v1"] = "dealerline.control.keys.v1"
    session_id: str
    stream_sid: str
    run: int = Field(ge=1)
    digits: str = Field(pattern=r"^[0-9*#]{1,32}$")
    first_at: float  # the run's first key
    at: float = Field(default_factory=now)  # the run's last key


class TurnPlayed(Wire):
    """The gateway played the whole of ``turn_id`` to the caller (its last mark came back)."""

    type: Literal["dealerline.control.turn_played.v1"] = "dealerline.control.turn_played.v1"
    session_id: str
    turn_id: str
    at: float = Field(default_factory=now)


ControlMessage = CallIncoming | StreamStarted | StreamStopped | BargeIn | KeyPresses | TurnPlayed
Control = Annotated[ControlMessage, Field(discriminator="type")]
_control: TypeAdapter[ControlMessage] = TypeAdapter(Control)


def parse_control(data: bytes | str) -> ControlMessage:
    return _control.validate_json(data)


# --------------------------------------------------------------------------- command lane
# ``call.<sid>.command``: the fleet → the gateway holding the call (the only direction).


class HangupRequest(Wire):
    """Ask the gateway holding the call to end it once ``after_turn`` has been heard."""

    type: Literal["dealerline.command.hangup.v1"] = "dealerline.command.hangup.v1"
    session_id: str
    after_turn: str | None = None
    reason: str = ""
    at: float = Field(default_factory=now)


# One kind so far; a union with a ``type`` discriminator like the control lane's when a
# second command arrives.
CommandMessage = HangupRequest
_command: TypeAdapter[CommandMessage] = TypeAdapter(CommandMessage)


def parse_command(data: bytes | str) -> CommandMessage:
    return _command.validate_json(data)


# --------------------------------------------------------------------------- escalation


class HumanCallStatus(enum.StrEnum):
    NONE = "none"
    CALLING = "calling"
    RINGING = "ringing"
    WAITING_CONFIRMATION = "waiting_confirmation"
    CONFIRMED = "confirmed"
    IN_CONFERENCE = "in_conference"
    COMPLETED = "completed"
    FAILED = "failed"


class StaffContact(Wire):
    """One person on the escalation hunt list (on duty, in the order to ring them)."""

    name: str
    phone: str  # E.164
    role: str | None = None
    staff_id: int | None = None


class EscalationRequest(Wire):
    """``escalation.request``: start a human call for a session (JetStream work queue).

    ``task_id`` makes the request idempotent (it is also the ``Nats-Msg-Id``); ``staff`` is
    the hunt list read from the dealership database when the request was made.
    """

    type: Literal["dealerline.escalation.request.v1"] = "dealerline.escalation.request.v1"
    session_id: str
    call_sid: str
    task_id: str
    reason: str
    customer_name: str | None = None
    staff: list[StaffContact] = Field(default_factory=list)
    requested_at: float = Field(default_factory=now)


EscalationReason = Literal[
    "busy",  # the person's line was busy
    "no_answer",  # it rang out (the ring timeout)
    "failed",  # Twilio could not place the call (bad number, carrier error)
    "canceled",  # the outbound call was cancelled before it was answered
    "no_key",  # answered, but no key pressed: call screening or voicemail
    "declined",  # a person answered and declined (or did not press 1)
    "exhausted",  # nobody on the hunt list took the call
    "customer_hung_up",  # the caller left; everything was torn down
    "human_ended",  # the team member left (after accepting)
    "error",  # the escalation could not go on (the customer could not be moved)
]
"""Why a human call (or the whole escalation) ended; the agent speaks from it."""


class EscalationStatus(Wire):
    """``call.<sid>.escalation``: the human call moved to ``status``.

    One escalation rings the hunt list in order: ``attempt`` (1-based) names the person
    being rung, so a ``FAILED`` with ``final=False`` only means "trying the next one".
    ``final`` is True once the whole escalation is over (``COMPLETED``, ``FAILED`` after the
    list is exhausted or when the caller hung up); only then is ``reason`` one of
    ``exhausted``/``customer_hung_up``/``human_ended``/``error``.
    """

    type: Literal["dealerline.escalation.status.v1"] = "dealerline.escalation.status.v1"
    session_id: str
    status: HumanCallStatus
    detail: str | None = None
    staff_name: str | None = None
    task_id: str | None = None
    attempt: int = Field(default=0, ge=0)
    final: bool = False
    reason: EscalationReason | None = None
    at: float = Field(default_factory=now)

    @property
    def spoken(self) -> bool:
        """Whether the agent announces this status to the caller: a person accepted, or
        the whole escalation failed (a ``FAILED`` that is not final only means the next
        person is rung); either needs the task it belongs to."""
        if self.task_id is None:
            return False
        if self.status is HumanCallStatus.CONFIRMED:
            return True
        return self.status is HumanCallStatus.FAILED and self.final


# --------------------------------------------------------------------------- agent jobs
# ``call.<sid>.agent_job`` (stream ``DL_AGENT_JOBS``): the turns the agent must take even
# if the replica that heard of them dies: a greeting (an incoming call, a started stream)
# and an escalation outcome it speaks. The job is the message that asked for the turn; it
# also goes out on its usual core subject for everyone else.

AgentJob = CallIncoming | StreamStarted | EscalationStatus
_agent_job: TypeAdapter[AgentJob] = TypeAdapter(Annotated[AgentJob, Field(discriminator="type")])


def parse_agent_job(data: bytes | str) -> AgentJob:
    return _agent_job.validate_json(data)


def agent_job_id(job: AgentJob) -> str:
    """The job's ``Nats-Msg-Id``: the same call, stream or status sent again is a duplicate
    the stream drops, however many publishers or retries sent it."""
    sid = job.session_id
    if isinstance(job, CallIncoming):
        return f"incoming:{sid}:{job.call_sid}"
    if isinstance(job, StreamStarted):
        return f"started:{sid}:{job.stream_sid}"
    return f"escalation:{sid}:{job.task_id}:{job.status.value}:{job.attempt}:{int(job.final)}"


# --------------------------------------------------------------------------- dashboard events


class _Event(Wire):
    session_id: str
    at: float = Field(default_factory=now)


class CallStartedEvent(_Event):
    type: Literal["dealerline.event.call_started.v1"] = "dealerline.event.call_started.v1"
    call_sid: str
    from_masked: str | None = None


class StreamStartedEvent(_Event):
    type: Literal["dealerline.event.stream_started.v1"] = "dealerline.event.stream_started.v1"
    stream_sid: str
    resumed: bool = False


class TranscriptEvent(_Event):
    type: Literal["dealerline.event.transcript.v1"] = "dealerline.event.transcript.v1"
    role: Literal["user", "assistant"]
    text: str
    turn_id: str | None = None
    interrupted: bool = False


class StateUpdateEvent(_Event):
    type: Literal["dealerline.event.state_update.v1"] = "dealerline.event.state_update.v1"
    state: dict[str, Any]


class HumanStatusEvent(_Event):
    """The dashboard's copy of every :class:`EscalationStatus` (same fields)."""

    type: Literal["dealerline.event.human_status.v1"] = "dealerline.event.human_status.v1"
    status: HumanCallStatus
    detail: str | None = None
    staff_name: str | None = None
    task_id: str | None = None
    attempt: int = Field(default=0, ge=0)
    final: bool = False
    reason: EscalationReason | None = None


class LatencyEvent(_Event):
    type: Literal["dealerline.event.latency.v1"] = "dealerline.event.latency.v1"
    turn_id: str
    utterance_id: str | None = None
    timings: TurnTimings
    stages_ms: dict[str, float]


class CallEndedEvent(_Event):
    type: Literal["dealerline.event.call_ended.v1"] = "dealerline.event.call_ended.v1"
    reason: str


class AppointmentEvent(_Event):
    """The agent booked, moved or cancelled an appointment (published once the turn's
    state is stored). ``start`` is ISO 8601 with the dealership's UTC offset."""

    type: Literal["dealerline.event.appointment.v1"] = "dealerline.event.appointment.v1"
    action: Literal["booked", "rescheduled", "cancelled"]
    appointment_id: int
    service: str | None = None
    start: str | None = None
    vehicle: str | None = None
    customer_name: str | None = None
    turn_id: str | None = None


class CallbackRequestedEvent(_Event):
    """The agent took a callback request (no person could be reached, or the caller
    asked for one); the row is ``callback_requests.id == callback_id``."""

    type: Literal["dealerline.event.callback_requested.v1"] = (
        "dealerline.event.callback_requested.v1"
    )
    callback_id: int
    preferred_window: str
    reason: str
    customer_name: str | None = None
    turn_id: str | None = None


class CallRecordedEvent(_Event):
    """The after-call record of the session is in the database (``calls.session_id``)."""

    type: Literal["dealerline.event.call_recorded.v1"] = "dealerline.event.call_recorded.v1"
    outcome: str
    summary: str | None = None
    duration_s: float | None = None


EventMessage = (
    CallStartedEvent
    | StreamStartedEvent
    | TranscriptEvent
    | StateUpdateEvent
    | HumanStatusEvent
    | LatencyEvent
    | CallEndedEvent
    | AppointmentEvent
    | CallbackRequestedEvent
    | CallRecordedEvent
)
Event = Annotated[EventMessage, Field(discriminator="type")]
_event: TypeAdapter[EventMessage] = TypeAdapter(Event)


def parse_event(data: bytes | str) -> EventMessage:
    return _event.validate_json(data)


# --------------------------------------------------------------------------- staff actions


class StaffAction(Wire):
    """Request (NATS request/reply) on ``call.<sid>.staff`` from the dashboard to the
    escalation service running that session's escalation: ``claim`` rings ``staff`` next
    (a person still ringing who has not answered is let go), ``pass`` takes ``staff`` off
    this escalation's list (their leg is ended if it is ringing them)."""

    type: Literal["dealerline.escalation.staff_action.v1"] = "dealerline.escalation.staff_action.v1"
    session_id: str
    action: Literal["claim", "pass"]
    staff: StaffContact
    at: float = Field(default_factory=now)


class StaffActionReply(Wire):
    type: Literal["dealerline.escalation.staff_action_reply.v1"] = (
        "dealerline.escalation.staff_action_reply.v1"
    )
    accepted: bool
    detail: str


class StaffDutyChanged(Wire):
    """``staff.duty``: a team member went on or off duty (dashboard → escalation, other
    dashboard replicas). Running escalations stop ringing a person who went off duty."""

    type: Literal["dealerline.staff.duty.v1"] = "dealerline.staff.duty.v1"
    staff_id: int
    name: str
    on_duty: bool
    at: float = Field(default_factory=now)


# --------------------------------------------------------------------------- notifications


class NotificationJob(Wire):
    """``notify.<channel>`` (JetStream work queue ``DL_NOTIFY``): one email or text to send.

    ``key`` is the idempotency key (also the ``Nats-Msg-Id``): the sender records it in the
    ``deliveries`` table, and a job whose key was sent already sends nothing.
    """

    type: Literal["dealerline.notify.job.v1"] = "dealerline.notify.job.v1"
    key: str = Field(min_length=1, max_length=200)
    channel: Literal["email", "sms"]
    session_id: str | None = None
    to: str  # an email address, or an E.164 number
    subject: str | None = None  # email only
    body: str
    # The body holds a one-time secret (a verification code): it is sent, but never kept in
    # the ``deliveries`` table (the row says it was withheld).
    secret: bool = False
    created_at: float = Field(default_factory=now)
