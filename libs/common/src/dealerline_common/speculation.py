"""Turn taking on the wire: what the agent's turn asks the caller for, the speculative
transcription of the caller's speech so far (``stt.probe``: core NATS request/reply to the
``stt`` queue group), and why the gateway ended a turn.

While the caller pauses, the gateway asks an STT worker to transcribe the audio so far
(:class:`SttProbe` in the ``Dl-Meta`` header, 8 kHz mu-law as the payload); the worker
answers with :class:`SttProbeResult`. The answer is advisory: a lost or late one only
means the gateway ends the turn on its timers, and the utterance goes to STT whole. When
the turn ends with no speech after the probe, the utterance carries the probe's text as
:class:`SpeculativeTranscript` and STT publishes it without decoding again.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .wire import Wire

# What a question of the agent asks for; the gateway judges whether the caller's words
# so far hold a complete one (dealerline_common.entities).
Expects = Literal["phone", "vin", "plate", "datetime", "mileage", "name", "email", "yes_no"]
EXPECTS: tuple[Expects, ...] = (
    "phone",
    "vin",
    "plate",
    "datetime",
    "mileage",
    "name",
    "email",
    "yes_no",
)


class SttProbe(Wire):
    """Header of a ``stt.probe`` request: transcribe this audio now (nothing durable)."""

    type: Literal["dealerline.stt.probe.v1"] = "dealerline.stt.probe.v1"
    session_id: str
    probe_id: str
    sample_rate: int = 8000
    encoding: Literal["audio/x-mulaw"] = "audio/x-mulaw"


class SttProbeResult(Wire):
    """The reply to a :class:`SttProbe` (``error`` set when it could not be transcribed)."""

    type: Literal["dealerline.stt.probe_result.v1"] = "dealerline.stt.probe_result.v1"
    session_id: str
    probe_id: str
    text: str = ""
    language: str | None = None
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    no_speech_prob: float | None = None
    audio_ms: float = 0.0
    stt_ms: float = 0.0
    model: str = ""
    error: str | None = None


class SpeculativeTranscript(Wire):
    """A probe's transcript of exactly the utterance's audio (see the module doc)."""

    probe_id: str
    text: str
    language: str | None = None
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    no_speech_prob: float | None = None
    stt_ms: float
    model: str
    started: float  # when the probe's transcription was asked for (wall clock)


class EndOfTurnInfo(Wire):
    """Why the gateway declared the end of the caller's turn when it did."""

    reason: str  # e.g. "model", "entity_complete", "entity_timeout", "silence", "max_length"
    expects: Expects | None = None
    model_prob: float | None = None  # the turn model's P(complete) at the decision
    silence_ms: float = 0.0  # silence after the last voiced frame when it was declared
