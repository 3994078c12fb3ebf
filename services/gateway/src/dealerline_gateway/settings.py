"""Gateway configuration, read from ``GATEWAY_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from dealerline_common.twilio_signing import TwilioSigningSettings


class GatewaySettings(TwilioSigningSettings):
    """The gateway's settings; the signature ones (``GATEWAY_TRUST_FORWARDED_HEADERS``,
    ``GATEWAY_TWILIO_SIGNATURE_ALGORITHM``, ``GATEWAY_TWILIO_WEBHOOK_KEY``,
    ``GATEWAY_TWILIO_WEBHOOK_KEY_ID``) are :class:`TwilioSigningSettings`'."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_")

    public_url: str = Field(
        description="Public base URL Twilio calls (signatures are checked against it), "
        "e.g. https://dealer.example.com; the media stream URL is wss://<same host>/..."
    )
    twilio_auth_token: SecretStr = Field(description="Twilio auth token for X-Twilio-Signature")
    http_port: int = Field(default=8080, ge=0, le=65535)
    allow_unsigned_streams: bool = Field(
        default=False,
        description="LOCAL DEVELOPMENT ONLY: serve a media-stream handshake without "
        "X-Twilio-Signature (the one-time token is still required); never in production",
    )
    call_admission_ttl_s: float = Field(
        default=86400.0,
        gt=0,
        description="a CallSid's /incoming answer is kept this long: the same call asking "
        "again gets the same answer (same session and token), never a second token",
    )

    # VAD and endpointing (numbers chosen with bench/vad_bench.py, see README).
    vad_kind: Literal["webrtc", "energy"] = "webrtc"
    vad_aggressiveness: int = Field(default=3, ge=0, le=3)
    energy_threshold: float = Field(default=500.0, gt=0)
    speech_start_frames: int = Field(default=3, ge=1, description="voiced frames for onset")
    speech_start_window: int = Field(default=5, ge=1, description="...within this many frames")
    end_silence_ms: float = Field(
        default=600.0, ge=100, description="hangover ending a turn (end_of_turn=silence)"
    )
    min_speech_ms: float = Field(default=100.0, ge=20)
    preroll_ms: float = Field(default=200.0, ge=0)
    tail_ms: float = Field(default=120.0, ge=0)
    max_utterance_s: float = Field(default=30.0, gt=1)

    # End of turn (dealerline_gateway.endofturn): "smart" = the turn model and the
    # speculative transcript decide, the hangover is only the hard maximum; "silence" = the
    # fixed end_silence_ms rule (also the fallback when the turn model cannot be loaded).
    end_of_turn: Literal["smart", "silence"] = "smart"
    eot_probe_after_ms: float = Field(
        default=200.0, ge=20, description="silence that starts the turn model and the probe"
    )
    eot_model_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    eot_unsure_max_ms: float = Field(
        default=1000.0, ge=100, description="model says not done, nothing expected: end then"
    )
    eot_entity_max_ms: float = Field(
        default=2000.0, ge=100, description="expected entity incomplete: end then (hard max)"
    )
    eot_transcript_wait_ms: float = Field(
        default=1200.0, ge=0, description="no transcript by then: decide without it"
    )
    eot_veto_prob: float = Field(
        default=0.15, ge=0.0, le=1.0, description="a complete entity ends unless P(done) < this"
    )
    eot_open_entity_prob: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="an answer that may go on whole (a date, a name) ends at P(done) >= this",
    )
    eot_model_alone_prob: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="nothing expected, no words yet: P(done) at or above ends on the model alone",
    )
    turn_model_path: Path | None = Field(
        default=None, description="Smart Turn ONNX file (default: the installed v3.2)"
    )
    turn_model_threads: int = Field(default=1, ge=1, le=16)
    turn_model_concurrency: int = Field(
        default=1,
        ge=1,
        le=16,
        description="turn model runs at once (the others queue); each holds ~15 MB while "
        "running, so more than the gateway's cores only costs memory",
    )
    probe_timeout_s: float = Field(
        default=2.0, gt=0, description="an stt.probe request waits this long for its answer"
    )

    # Playback and barge-in.
    playback_frames_per_chunk: int = Field(
        default=2, ge=1, le=2, description="media payload = 160 (20 ms) or 320 (40 ms) bytes"
    )
    playback_lead_ms: float = Field(
        default=60.0,
        ge=0,
        le=60_000,
        description="paced playback: a chunk goes out once Twilio has at most this much left "
        "to play, so a hold silences the line after at most this plus one chunk (60 + 40 ms "
        "by default; a clear on barge-in is at once whatever the lead). With 0, every chunk "
        "left as the audio before it ran out and any stall of the event loop or the network "
        "over 20 ms was a gap the caller heard (load bench, 20 calls on one core: 68-88 late "
        "of 4,800 at 0, none at 40-60 ms when the load generator kept up). A large value "
        "sends replies in bursts, e.g. for a simulator playing faster than real time",
    )
    barge_probe_ms: float = Field(
        default=240.0, ge=20, description="voiced speech over playback before its words are judged"
    )
    barge_max_hold_ms: float = Field(
        default=700.0, ge=20, description="voiced speech over held playback that barges in anyway"
    )
    outbound_queue_max: int = Field(default=256, ge=1, description="sentences queued per call")
    hangup_timeout_s: float = Field(default=60.0, gt=0)
    sentence_gap_timeout_s: float = Field(
        default=20.0,
        gt=0,
        description="skip a reply sentence still missing this long after a later one arrived "
        "(longer than the TTS ack_wait, so a redelivered sentence can fill the gap first)",
    )

    dtmf_interdigit_s: float = Field(
        default=1.5,
        gt=0,
        description="a run of key presses ends this long after its last key (or at once at "
        "#) and is published as one KeyPresses",
    )

    stream_token_ttl_s: float = Field(default=300.0, gt=0)
    event_publish_timeout_s: float = Field(
        default=2.0,
        gt=0,
        description="a webhook waits this long for a best-effort event publish (e.g. "
        "CallStartedEvent), then answers Twilio anyway",
    )
    escalation_public_url: str | None = Field(
        default=None,
        description="public base URL of the escalation service: the conference's status "
        "callbacks go to its /api/voice/conference-status",
    )
    conference_wait_url: str | None = None
    handoff_grace_s: float = Field(
        default=5.0,
        gt=0,
        description="when a transfer to the human conference is due, how long a stream stop "
        "waits for the /escalate webhook before it counts as a hang-up",
    )

    # Hostile input (issue 16): bounds that keep one socket from stalling the others.
    ws_max_message_bytes: int = Field(
        default=65536,
        ge=4096,
        description="largest media-stream WebSocket message (Twilio's are under 1 KiB); a "
        "larger one closes that socket with 1009",
    )
    stream_start_timeout_s: float = Field(
        default=5.0, gt=0, description="a media stream that sends no start by then is closed"
    )
    media_payload_max_bytes: int = Field(
        default=8000,
        ge=160,
        description="longest media payload accepted (8000 = 1 s; Twilio sends 160): a "
        "longer one is skipped as oversized_payload",
    )
    utterance_backlog_s: float = Field(
        default=60.0,
        gt=0,
        description="caller audio queued for the bus per call, at most: an utterance past "
        "it is dropped (counted, logged) while the bus is behind",
    )

    @field_validator("public_url", "escalation_public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL such as https://dealer.example.com")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query string or fragment")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check_end_of_turn(self) -> GatewaySettings:
        if not self.eot_probe_after_ms <= self.eot_unsure_max_ms <= self.eot_entity_max_ms:
            raise ValueError(
                "end-of-turn times must grow: GATEWAY_EOT_PROBE_AFTER_MS <= "
                "GATEWAY_EOT_UNSURE_MAX_MS <= GATEWAY_EOT_ENTITY_MAX_MS"
            )
        if self.barge_probe_ms > self.barge_max_hold_ms:
            raise ValueError("GATEWAY_BARGE_PROBE_MS must not exceed GATEWAY_BARGE_MAX_HOLD_MS")
        return self

    @property
    def stream_url(self) -> str:
        """The ``<Stream url>``: wss:// on the public host (ws:// only for an http base)."""
        parts = urlsplit(self.public_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}{parts.path}/api/voice/media-stream"
