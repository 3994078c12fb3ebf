"""STT worker configuration (environment variables ``STT_*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from dealerline_common.service import WorkerSettings

# Whisper's prompt biases spelling towards the words a service-desk call uses; it must stay
# well under the 224-token prompt window and read like a previous utterance, not a list
# of instructions.
DEFAULT_PROMPT = (
    "Thanks for calling the dealership service department. I'd like to book an "
    "appointment for an oil change, a tire rotation and a brake inspection on my Toyota "
    "Camry. I also have a Honda Civic, a Ford F-150, a Chevy Silverado, a Nissan Altima, "
    "a Hyundai, a Kia, a Subaru, a Jeep, a BMW and a Tesla. My VIN is on the registration. "
    "Is there a loaner car, a shuttle, a recall or a warranty? Check engine light, "
    "transmission, alignment, battery, wiper blades, state inspection."
)

# Below this the model loops on short windows ("my name is … my name is …"; bench_stt.py).
MIN_ENCODER_WINDOW_S = 10.0


class SttSettings(WorkerSettings):
    model_config = SettingsConfigDict(
        env_prefix="STT_", env_ignore_empty=True, extra="ignore", frozen=True
    )

    http_port: int = Field(default=8082, ge=0, le=65535, description="/livez /readyz /metrics")
    model: str = Field(
        default="",
        description="faster-whisper model: a local CTranslate2 folder or a size name already "
        "in the Hugging Face cache (nothing is downloaded); empty = the bundled tiny.en",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    device_index: int = Field(default=0, ge=0)
    compute_type: str = Field(
        default="default",
        description="CTranslate2 compute type; default = int8 on cpu, float16 on cuda",
    )
    # Measured (bench_stt.py, tiny.en, CPU, 10 phone-line sentences): beam 5 cut WER from
    # 4.5% to 3.4% (one word) for ~15-20% more decode time; greedy is the latency default.
    beam_size: int = Field(default=1, ge=1, le=10, description="1 = greedy (lowest latency)")
    language: str | None = "en"
    initial_prompt: str | None = Field(
        default=DEFAULT_PROMPT, description='vocabulary prompt; "none" for no prompt'
    )
    # Measured (bench_stt.py, tiny.en, CPU): no change in WER or latency on endpointed speech,
    # but noise-only utterances (breath, clicks: the gateway's false starts) come back
    # empty in ~2 ms instead of a ~220 ms decode that can hallucinate "You".
    vad_filter: bool = Field(
        default=True, description="Whisper's own Silero pass over an already endpointed utterance"
    )
    temperature_fallback: bool = Field(
        default=False,
        description="re-decode at higher temperatures when a result looks degenerate "
        "(more robust, but a failed decode costs a second pass)",
    )
    # Measured (bench_stt.py --windows, tiny.en int8, this 2-core CPU): see the README.
    # 0 by default: with 15 s, tiny.en and the dealership prompt heard the demo's "Yes
    # please, book it." as "Just please book it." (a lost confirmation); opt in per model.
    encoder_window_s: float = Field(
        default=0.0,
        ge=0,
        le=30,
        description="audio window the encoder sees (longer audio: its length + 1 s); "
        "0 or 30 = Whisper's full 30 s window",
    )
    concurrency: int = Field(default=1, ge=1, le=64, description="jobs at once in this process")
    cpu_threads: int = Field(
        default=0, ge=0, description="CTranslate2 threads per job; 0 = its default"
    )
    ack_wait_s: float = Field(
        default=2.0,
        gt=0,
        description="redeliver a job this long after its worker died (heartbeats keep a "
        "live worker's job; unanswered for 3/4 of it, the job is cancelled)",
    )
    max_deliver: int = Field(default=5, ge=1)
    max_audio_s: float = Field(default=60.0, gt=0, description="longer utterances are rejected")
    probe_concurrency: int = Field(
        default=1,
        ge=0,
        le=64,
        description="stt.probe requests transcribed at once; one more is answered "
        '"busy" at once (never queued); 0 = this worker answers no probes',
    )
    probe_max_audio_s: float = Field(
        default=30.0, gt=0, description="longer probes are answered invalid (one Whisper window)"
    )

    @field_validator("encoder_window_s")
    @classmethod
    def _window(cls, value: float) -> float:
        if 0 < value < MIN_ENCODER_WINDOW_S:
            raise ValueError(
                f"must be 0 (the full window) or at least {MIN_ENCODER_WINDOW_S:g} s: "
                "with less, Whisper repeats itself"
            )
        return value

    @field_validator("initial_prompt", "language")
    @classmethod
    def _none_word(cls, value: str | None) -> str | None:
        # An empty variable means "default" (env_ignore_empty), so "none" switches it off.
        return None if value is None or value.strip().lower() in ("none", "") else value
