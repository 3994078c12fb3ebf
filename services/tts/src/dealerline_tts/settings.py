"""TTS worker configuration (environment variables ``TTS_*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from dealerline_common.service import WorkerSettings

# The openers the agent cuts off a reply's first sentence ("Sure," + "I can book that."),
# with a comma and with a full stop, the few an LLM likes to exclaim, and some short
# replies: spoken before the worker takes work, so the first audio of most replies costs
# no synthesis (about half a second each on two CPU cores; saved in a file, so once per
# machine, see ``cache_store``).
OPENERS = (
    "Sure",
    "Okay",
    "Great",
    "Of course",
    "Absolutely",
    "Got it",
    "Perfect",
    "Alright",
    "No problem",
    "Thanks",
    "Thank you",
    "Certainly",
)
DEFAULT_PREWARM = (
    *(f"{o}{mark}" for o in OPENERS for mark in (",", ".")),
    *(f"{o}!" for o in ("Sure", "Great", "Perfect", "Absolutely", "Of course")),
    "I'm sorry,",
    "Good news,",
    "Yes,",
    "Done,",
    "Done.",
    "You're welcome,",
    "You're welcome.",
    "You're all set.",
    "Welcome back.",
    "Let me check that for you.",
    "One moment.",
)


class TtsSettings(WorkerSettings):
    model_config = SettingsConfigDict(
        env_prefix="TTS_", env_ignore_empty=True, extra="ignore", frozen=True
    )

    http_port: int = Field(default=8083, ge=0, le=65535, description="/livez /readyz /metrics")
    model_path: str = Field(
        default="", description="Kokoro ONNX file; empty = the bundled int8 export (joined once)"
    )
    voices_path: str = Field(default="", description="voices .npz; empty = the bundled voices")
    # The best-understood bundled voice through the phone band (bench/voices_bench.py: WER
    # 3.6 % against jf_alpha's 7.2 %) other than jm_kumo, which the caller simulator speaks
    # with (the agent must sound different). A real deployment should use an English voice
    # (`dealerline voices`: af_heart).
    voice: str = Field(
        default="jf_nezumi",
        description="a voice in the voice pack; a Say's own voice (the dealership's) wins",
    )
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
        default=2.0,
        gt=0,
        description="redeliver a job this long after its worker died (heartbeats keep a "
        "live worker's job; unanswered for 3/4 of it, the job is cancelled)",
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
    # 80 holds a greeting's or a closing's whole sentence ("Is there anything else I can
    # help you with?"), said on every call: from the second call on it costs nothing.
    cache_max_chars: int = Field(
        default=80, ge=0, description="phrase cache: texts up to this long are kept; 0 = off"
    )
    cache_entries: int = Field(default=512, ge=0, description="phrase cache: most phrases kept")
    cache_max_bytes: int = Field(
        default=16 * 1024 * 1024, ge=0, description="phrase cache: most mu-law bytes kept"
    )
    cache_store: bool = Field(
        default=True,
        description="keep the pre-warmed phrases in a file, so the next start on this "
        "machine does not speak them again",
    )
    cache_store_dir: str = Field(default="", description="where; empty = <model cache>/tts-phrases")
    prewarm: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PREWARM),
        description="phrases spoken into the cache before work is taken (JSON list; [] = none)",
    )
