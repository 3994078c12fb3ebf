"""TTS worker configuration (environment variables ``TTS_*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from dealerline_common.service import WorkerSettings


class TtsSettings(WorkerSettings):
    model_config = SettingsConfigDict(
        env_prefix="TTS_", env_ignore_empty=True, extra="ignore", frozen=True
    )

    http_port: int = Field(default=8083, ge=0, le=65535, description="/livez /readyz /metrics")
    model_path: str = Field(
        default="", description="Kokoro ONNX file; empty = the bundled int8 export (joined once)"
    )
    voices_path: str = Field(default="", description="voices .npz; empty = the bundled voices")
    # The caller simulator speaks with jm_kumo; the agent must sound different.
    voice: str = "jf_alpha"
    speed: float = Field(default=1.0, ge=0.5, le=2.0)
    lang: str = "en-us"
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="cuda/auto use CUDAExecutionProvider when onnxruntime has it"
    )
    device_index: int = Field(default=0, ge=0)
    intra_op_threads: int = Field(
        default=0, ge=0, description="onnxruntime threads; 0 = its default"
    )
    concurrency: int = Field(
        default=1, ge=1, le=64, description="sentences at once in this process"
    )
    ack_wait_s: float = Field(
        default=15.0, gt=0, description="redeliver a job this long after its worker died"
    )
    max_deliver: int = Field(default=3, ge=1)
    lead_ms: float = Field(default=10.0, ge=0, description="silence kept before the first sound")
    tail_ms: float = Field(default=80.0, ge=0, description="silence kept after the last sound")
    cancel_ttl_s: float = Field(
        default=600.0,
        gt=0,
        description="how long a barge-in, a muted session or a latest stream is remembered",
    )
    cancel_capacity: int = Field(default=10_000, ge=1)
    max_text_chars: int = Field(default=1000, ge=1, description="longer sentences are rejected")
