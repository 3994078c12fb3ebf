"""Per-utterance STT latency, real-time factor and word error rate on this machine.

    uv run python services/stt/bench/bench_stt.py                 # beam 1 vs 5, VAD off/on
    STT_DEVICE=cuda STT_MODEL=large-v3-turbo uv run python services/stt/bench/bench_stt.py

Utterances are ~10 caller sentences spoken by Kokoro with the caller simulator's voice
(jm_kumo), sent through the phone path (24 kHz → 8 kHz mu-law) and framed as the
gateway's endpointer would: a little silence and line noise before and after. Timing
covers what the worker does per job: mu-law decode, resampling, decoding. Settings come
from the ``STT_*`` environment like the service; ``--beams`` / ``--vad`` sweep. A few
noise-only utterances (breath, hiss) show what the VAD pass saves and whether Whisper
invents words for them.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time

import jiwer
import numpy as np

from dealerline_common.audio import float_to_ulaw, ulaw_to_float
from dealerline_common.models import bundled_voices_path, kokoro_int8_path
from dealerline_stt.engine import WHISPER_RATE, WhisperEngine
from dealerline_stt.settings import SttSettings

SENTENCES = [
    "Hi, I'd like to schedule an oil change for my Toyota Camry.",
    "Do you have anything available on Tuesday morning?",
    "My check engine light came on yesterday.",
    "Can you also do a tire rotation while it's in the shop?",
    "The car is a twenty nineteen Honda Accord.",
    "How much does a brake inspection cost?",
    "Yes, that time works for me, thank you.",
    "My name is Sarah Johnson.",
    "I'd rather talk to a person about the warranty, please.",
    "Is there a loaner car or a shuttle I could use?",
]


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def speak_all(sentences: list[str], voice: str) -> list[bytes]:
    import onnxruntime as ort
    from kokoro_onnx import Kokoro

    session = ort.InferenceSession(str(kokoro_int8_path()), providers=["CPUExecutionProvider"])
    kokoro = Kokoro.from_session(session, str(bundled_voices_path()))
    rng = np.random.default_rng(7)
    out = []
    for text in sentences:
        audio, rate = kokoro.create(text, voice=voice, lang="en-us")
        pad = np.zeros(int(rate * 0.3), dtype=np.float32)
        framed = np.concatenate([pad, audio, pad])
        framed = framed + rng.standard_normal(framed.size).astype(np.float32) * 0.003
        out.append(float_to_ulaw(framed, rate))
    return out


def noise_utterances() -> list[bytes]:
    """What a gateway's endpointer lets through without speech: breaths, clicks, hiss."""
    rng = np.random.default_rng(3)
    rate = 8000
    out = []
    for seconds, level in ((0.6, 0.3), (0.8, 0.15), (1.0, 0.05), (1.5, 0.01), (0.5, 0.4)):
        n = int(rate * seconds)
        burst = rng.standard_normal(n).astype(np.float32) * level * np.hanning(n).astype(np.float32)
        out.append(float_to_ulaw(burst, rate))
    return out


def run_noise(engine: WhisperEngine, utterances: list[bytes]) -> tuple[float, int]:
    """Mean time per noise-only utterance, and how many came back with words."""
    times, worded = [], 0
    for ulaw in utterances:
        started = time.perf_counter()
        result = engine.transcribe(ulaw_to_float(ulaw, WHISPER_RATE))
        times.append(time.perf_counter() - started)
        worded += bool(result.text)
    return statistics.fmean(times) * 1000, worded


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def run(engine: WhisperEngine, utterances: list[bytes]) -> dict[str, float]:
    times, audio_s, hyps = [], [], []
    for ulaw in utterances:
        started = time.perf_counter()
        result = engine.transcribe(ulaw_to_float(ulaw, WHISPER_RATE))
        times.append(time.perf_counter() - started)
        audio_s.append(len(ulaw) / 8000)
        hyps.append(normalise(result.text))
    refs = [normalise(SENTENCES[i % len(SENTENCES)]) for i in range(len(utterances))]
    return {
        "p50_ms": percentile(times, 50) * 1000,
        "p95_ms": percentile(times, 95) * 1000,
        "mean_ms": statistics.fmean(times) * 1000,
        "rtf": sum(times) / sum(audio_s),
        "wer": float(jiwer.wer(refs, hyps)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--beams", default="1,5", help="beam sizes to compare")
    parser.add_argument("--vad", default="off,on", help="vad_filter values to compare")
    parser.add_argument("--repeat", type=int, default=1, help="passes over the sentences")
    parser.add_argument("--voice", default="jm_kumo")
    args = parser.parse_args()

    base = SttSettings()
    print("synthesizing utterances…", file=sys.stderr)
    utterances = speak_all(SENTENCES, args.voice) * args.repeat
    noise = noise_utterances()
    rows = []
    for vad in [v.strip() == "on" for v in args.vad.split(",")]:
        for beam in [int(b) for b in args.beams.split(",")]:
            settings = base.model_copy(update={"beam_size": beam, "vad_filter": vad})
            engine = WhisperEngine(settings)
            engine.warm_up()
            stats = run(engine, utterances)
            noise_ms, worded = run_noise(engine, noise)
            stats |= {"noise_ms": noise_ms, "noise_worded": worded}
            rows.append((engine, beam, vad, stats))
    audio_total = sum(len(u) for u in utterances) / 8000
    print(
        f"\n{len(utterances)} utterances, {audio_total:.1f} s of audio, "
        f"mean {audio_total / len(utterances):.2f} s\n"
    )
    print(
        "| model | device | compute | beam | vad_filter | p50 ms | p95 ms | mean ms | RTF | WER "
        f"| noise-only ms | noise-only with words (of {len(noise)}) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for engine, beam, vad, s in rows:
        print(
            f"| {engine.name} | {engine.device} | {engine.compute_type} | {beam} | "
            f"{'on' if vad else 'off'} | {s['p50_ms']:.0f} | {s['p95_ms']:.0f} | "
            f"{s['mean_ms']:.0f} | {s['rtf']:.3f} | {s['wer']:.3f} | {s['noise_ms']:.0f} | "
            f"{s['noise_worded']:.0f} |"
        )


if __name__ == "__main__":
    main()
