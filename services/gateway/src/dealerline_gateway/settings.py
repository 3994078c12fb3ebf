"""Gateway configuration, read from ``GATEWAY_*`` environment variables."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from dealerline_common.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_")

    public_url: str = Field(
        description="Public base URL Twilio calls (signatures are checked against it), "
        "e.g. https://dealer.example.com; the media stream URL is wss://<same host>/..."
    )
    twilio_auth_token: SecretStr = Field(description="Twilio auth token for X-Twilio-Signature")
    http_port: int = Field(default=8080, ge=0, le=65535)
    trust_forwarded_headers: bool = Field(
        default=False,
        description="Also accept signatures over the URL rebuilt from X-Forwarded-Proto/Host",
    )
    validate_ws_signature: bool = Field(
        default=True,
        description="Check X-Twilio-Signature on the media-stream handshake when one is sent",
    )

    # VAD and endpointing (numbers chosen with bench/vad_bench.py, see README).
    vad_kind: Literal["webrtc", "energy"] = "webrtc"
    vad_aggressiveness: int = Field(default=3, ge=0, le=3)
    energy_threshold: float = Field(default=500.0, gt=0)
    speech_start_frames: int = Field(default=3, ge=1, description="voiced frames for onset")
    speech_start_window: int = Field(default=5, ge=1, description="...within this many frames")
    end_silence_ms: float = Field(default=600.0, ge=100, description="hangover ending a turn")
    min_speech_ms: float = Field(default=100.0, ge=20)
    preroll_ms: float = Field(default=200.0, ge=0)
    tail_ms: float = Field(default=120.0, ge=0)
    max_utterance_s: float = Field(default=30.0, gt=1)

    # Playback and barge-in.
    playback_frames_per_chunk: int = Field(
        default=2, ge=1, le=2, description="media payload = 160 (20 ms) or 320 (40 ms) bytes"
    )
    barge_in_min_speech_ms: float = Field(default=200.0, ge=0)
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

    @property
    def stream_url(self) -> str:
        """The ``<Stream url>``: wss:// on the public host (ws:// only for an http base)."""
        parts = urlsplit(self.public_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}{parts.path}/api/voice/media-stream"
