"""Per-sentence TTS latency and real-time factor on this machine.

    uv run python services/tts/bench/bench_tts.py
    TTS_DEVICE=cuda uv run python services/tts/bench/bench_tts.py   # needs onnxruntime-gpu

Each sentence is what the worker does per ``Say``: normalisation, phonemes, Kokoro,
silence trimming, 24 kHz → 8 kHz mu-law. One sentence is the unit of the agent's
streaming, so the per-sentence time is the TTS share of time-to-first-audio. Settings
come from the ``TTS_*`` environment like the service.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from dealerline_common.audio import float_to_ulaw
from dealerline_tts.engine import KokoroEngine
from dealerline_tts.settings import TtsSettings
from dealerline_tts.text import normalize_text

SENTENCES = [
    "Thanks for calling Riverside Motors service, how can I help you today?",
    "Sure, I can help you book an oil change.",
    "What's the year, make and model of your vehicle?",
    "I have an opening on Tuesday at 9:30 AM.",
    "A standard oil change is $49.95 and takes about 45 minutes.",
    "Would you like us to do a tire rotation as well?",
    "Great, you're all set.",
    "Can I get your name and the best number to reach you?",
    "Let me connect you with one of our service advisors.",
    "Is there anything else I can help you with?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=2, help="passes over the sentences")
    args = parser.parse_args()

    settings = TtsSettings()
    load = time.perf_counter()
    engine = KokoroEngine(settings)
    engine.warm_up()
    load_s = time.perf_counter() - load

    times, audio_s, chars = [], [], []
    for _ in range(args.repeat):
        for sentence in SENTENCES:
            started = time.perf_counter()
            ulaw = float_to_ulaw(engine.synthesize(normalize_text(sentence)), engine.sample_rate)
            times.append(time.perf_counter() - started)
            audio_s.append(len(ulaw) / 8000)
            chars.append(len(sentence))

    def pct(q: float) -> float:
        return float(np.percentile(np.asarray(times), q)) * 1000

    print(
        f"\n{len(times)} sentences, mean {statistics.fmean(chars):.0f} chars, "
        f"mean audio {statistics.fmean(audio_s):.2f} s; load + warm-up {load_s:.1f} s\n"
    )
    print("| model | voice | providers | p50 ms | p95 ms | mean ms | max ms | RTF |")
    print("|---|---|---|---|---|---|---|---|")
    providers = ",".join(p if isinstance(p, str) else p[0] for p in engine.providers)
    print(
        f"| {engine.name} | {settings.voice} | {providers} | {pct(50):.0f} | {pct(95):.0f} | "
        f"{statistics.fmean(times) * 1000:.0f} | {max(times) * 1000:.0f} | "
        f"{sum(times) / sum(audio_s):.3f} |"
    )


if __name__ == "__main__":
    main()
