"""Smart Turn v3.2 benchmark: inference time on this CPU, and how it ranks complete answers
against answers cut off mid-phrase, per Kokoro voice.

- timing: p50/p95/min of the features (numpy) and of the model run (onnxruntime) for 2 s
  and 8 s of caller audio (the model always sees an 8 s window, so the run should cost the
  same), at ``threads`` 1 and 2, after a warm-up;
- scores: each phrase as the gateway holds it at the probe (8 kHz mu-law speech, trailing
  quiet trimmed, then ``--pause-ms`` of silence), P(complete) through the real pipeline and,
  for comparison, with the 8 kHz audio handed over as if it were 16 kHz (the bug to avoid).

Run: ``cd /work/main && uv run python services/gateway/bench/turn_model_bench.py``
(``make setup`` installs the model). Synthesized speech is cached under ``bench/.cache``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from dealerline_common import audio
from dealerline_gateway import turn_model
from dealerline_gateway.turn_model import SmartTurn

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache" / "turn"
VOICES = ["jm_kumo", "jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro"]
PAIRS = [
    ("I would like to book an oil change for Tuesday.", "My phone number is five five five"),
    ("Can you tell me what time you close on Saturday?", "I was wondering if you could"),
    ("Yes, Tuesday at nine works for me.", "I'd like to come in on"),
    ("My name is Daniel Carter.", "My name is Daniel and my number is"),
    ("That's all, thank you very much.", "The VIN is one H G C M eight two"),
    ("No, that's everything.", "I need the brakes checked and"),
]


def synthesize(text: str, voice: str) -> bytes:
    """8 kHz mu-law Kokoro speech, cached by voice and text."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{voice}-{abs(hash((text, 'v1'))) % 10**10}.ulaw"
    key = CACHE / (path.name + ".txt")
    if path.exists() and key.exists() and key.read_text() == text:
        return path.read_bytes()
    from kokoro_onnx import Kokoro

    from dealerline_common.models import bundled_voices_path, kokoro_int8_path

    global _kokoro
    if _kokoro is None:
        _kokoro = Kokoro(str(kokoro_int8_path()), str(bundled_voices_path()))
    samples, rate = _kokoro.create(text, voice=voice, speed=1.0, lang="en-us")
    ulaw = audio.float_to_ulaw(np.asarray(samples, dtype=np.float32), int(rate))
    path.write_bytes(ulaw)
    key.write_text(text)
    return ulaw


_kokoro = None


def at_probe(ulaw: bytes, pause_ms: int) -> bytes:
    """Trailing quiet trimmed (whole frames), then ``pause_ms`` of silence."""
    pcm = audio.ulaw_to_pcm16(audio.pad_to_frames(ulaw)).astype(np.float64)
    rms = np.sqrt((pcm.reshape(-1, audio.FRAME_BYTES) ** 2).mean(axis=1))
    last = int(np.flatnonzero(rms > 0.05 * rms.max())[-1]) + 1
    silence = bytes([audio.ULAW_SILENCE]) * (pause_ms * audio.SAMPLE_RATE // 1000)
    return ulaw[: last * audio.FRAME_BYTES] + silence


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def timing(speech: bytes, runs: int) -> None:
    print(f"\n# inference time, {runs} runs after 3 warm-up (ms; cpu = process CPU time)")
    print(
        f"{'threads':>7} {'audio':>5} {'feat p50':>8} {'run p50':>8} {'run p95':>8} {'run min':>8} "
        f"{'cpu p50':>8}"
    )
    long = (speech * 8)[-8 * audio.SAMPLE_RATE :]
    for threads in (1, 2):
        model = SmartTurn(threads=threads)
        for seconds in (2, 8):
            clip = long[-seconds * audio.SAMPLE_RATE :]
            x16 = audio.ulaw_to_float(clip, turn_model.SAMPLE_RATE)
            feats: list[float] = []
            runs_ms: list[float] = []
            cpu_ms: list[float] = []
            for i in range(runs + 3):
                t0 = time.perf_counter()
                features = turn_model.model_features(x16)
                t1, c1 = time.perf_counter(), time.process_time()
                model._session.run(None, {model._input: features})
                t2, c2 = time.perf_counter(), time.process_time()
                if i >= 3:
                    feats.append((t1 - t0) * 1000)
                    runs_ms.append((t2 - t1) * 1000)
                    cpu_ms.append((c2 - c1) * 1000)
            print(
                f"{threads:>7} {seconds:>4}s {pct(feats, 50):8.1f} {pct(runs_ms, 50):8.1f} "
                f"{pct(runs_ms, 95):8.1f} {min(runs_ms):8.1f} {pct(cpu_ms, 50):8.1f}"
            )


def scores(voices: list[str], pause_ms: int) -> None:
    model = SmartTurn(threads=1)
    print(f"\n# P(complete) at {pause_ms} ms of silence: right = 8k->16k, wrong = 8k fed as 16k")
    print(
        f"{'voice':<14} {'pairs ok':>8} {'done>=.5':>8} {'cut<.5':>6} {'sep':>5} | wrong: "
        f"{'pairs ok':>8} {'sep':>5}"
    )
    for voice in voices:
        right: list[tuple[float, float]] = []
        wrong: list[tuple[float, float]] = []
        for done, cut in PAIRS:
            a, b = (
                at_probe(synthesize(done, voice), pause_ms),
                at_probe(synthesize(cut, voice), pause_ms),
            )
            right.append((model.predict(a), model.predict(b)))
            wrong.append(
                (
                    model.predict_16k(audio.ulaw_to_float(a, 8000)),
                    model.predict_16k(audio.ulaw_to_float(b, 8000)),
                )
            )
            print(
                f"  {voice:<12} {right[-1][0]:.3f} {right[-1][1]:.3f}  ({wrong[-1][0]:.3f} "
                f"{wrong[-1][1]:.3f})  {done!r} / {cut!r}"
            )

        def sep(s: list[tuple[float, float]]) -> float:
            return statistics.mean(d for d, _ in s) - statistics.mean(c for _, c in s)

        print(
            f"{voice:<14} {sum(d > c for d, c in right):>5}/{len(right)} "
            f"{sum(d >= 0.5 for d, _ in right):>6}/{len(right)} "
            f"{sum(c < 0.5 for _, c in right):>4}/{len(right)} {sep(right):5.2f} |        "
            f"{sum(d > c for d, c in wrong):>5}/{len(wrong)} {sep(wrong):5.2f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--pause-ms", type=int, default=200)
    ap.add_argument("--voices", nargs="*", default=VOICES)
    ap.add_argument("--no-scores", action="store_true")
    ap.add_argument("--no-timing", action="store_true")
    args = ap.parse_args()
    print(
        f"# machine: {platform.machine()} {os.cpu_count()} CPUs, python "
        f"{platform.python_version()}, load {os.getloadavg()[0]:.1f}"
    )
    if not args.no_timing:
        timing(at_probe(synthesize(PAIRS[0][0], "jm_kumo"), args.pause_ms), args.runs)
    if not args.no_scores:
        scores(args.voices, args.pause_ms)


if __name__ == "__main__":
    main()
