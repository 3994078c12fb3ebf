"""Per-utterance STT latency, real-time factor and word error rate on this machine.

    uv run python services/stt/bench/bench_stt.py                 # beam 1 vs 5, VAD off/on
    uv run python services/stt/bench/bench_stt.py --beams 1 --vad on --windows 30,10 \
        --voices jm_kumo,jf_alpha,jf_nezumi --short          # the encoder window
    STT_DEVICE=cuda STT_MODEL=large-v3-turbo uv run python services/stt/bench/bench_stt.py

Utterances are ~10 caller sentences spoken by Kokoro with the caller simulator's voice
(jm_kumo; ``--voices`` for more), sent through the phone path (24 kHz → 8 kHz mu-law) and
framed as the gateway's endpointer would: a little silence and line noise before and
after; ``--long`` adds turns of two or three sentences back to back (6–14 s), ``--short``
the short answers a speculative probe sees (backchannels, "No, Tuesday.", a number cut
off mid-way). Timing covers what the worker does per job: mu-law decode, resampling,
decoding; every configuration decodes each utterance in turn, so a busy machine slows
them alike. Settings come from the ``STT_*`` environment like the service; ``--beams``
/ ``--vad`` / ``--windows`` (encoder window, s; 30 = full) sweep. A few noise-only
utterances (breath, hiss) show what the VAD pass saves and whether Whisper invents words
for them.
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
# What a probe of the audio so far, or a barge-in judge, gets: short and cut off.
SHORT = [
    "Uh-huh.",
    "Mm-hmm.",
    "Okay.",
    "Yeah.",
    "Right.",
    "Sure.",
    "Got it.",
    "Wait.",
    "No, Tuesday.",
    "Yes.",
    "My number is five five five,",
    "It's a twenty eighteen",
    "Hold on, what about Friday?",
    "Around forty thousand miles.",
]


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def speak_all(sentences: list[str], voices: list[str]) -> list[tuple[str, bytes]]:
    import onnxruntime as ort
    from kokoro_onnx import Kokoro

    session = ort.InferenceSession(str(kokoro_int8_path()), providers=["CPUExecutionProvider"])
    kokoro = Kokoro.from_session(session, str(bundled_voices_path()))
    rng = np.random.default_rng(7)
    out = []
    for voice in voices:
        for text in sentences:
            audio, rate = kokoro.create(text, voice=voice, lang="en-us")
            pad = np.zeros(int(rate * 0.3), dtype=np.float32)
            framed = np.concatenate([pad, audio, pad])
            framed = framed + rng.standard_normal(framed.size).astype(np.float32) * 0.003
            out.append((text, float_to_ulaw(framed, rate)))
    return out


def long_turns(spoken: list[tuple[str, bytes]], per_voice: int) -> list[tuple[str, bytes]]:
    """Two or three of one voice's sentences back to back: a chatty caller's turn."""
    out = []
    for start in range(0, len(spoken), per_voice):
        voice = spoken[start : start + per_voice]
        for picks in ((0, 1), (2, 3, 6), (4, 8), (9, 5, 7)):
            chosen = [voice[i % len(voice)] for i in picks]
            out.append((" ".join(t for t, _ in chosen), b"".join(a for _, a in chosen)))
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


Config = tuple[WhisperEngine, int, bool, float]


def decode(engine: WhisperEngine, ulaw: bytes) -> tuple[float, str]:
    started = time.perf_counter()
    result = engine.transcribe(ulaw_to_float(ulaw, WHISPER_RATE))
    return time.perf_counter() - started, result.text


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def run(configs: list[Config], utterances: list[tuple[str, bytes]]) -> list[dict[str, float]]:
    """Each configuration's timing and WER; every utterance goes through all of them in
    turn. A "loop" is a hypothesis far longer than its reference (Whisper repeating)."""
    times: list[list[float]] = [[] for _ in configs]
    hyps: list[list[str]] = [[] for _ in configs]
    for _, ulaw in utterances:
        for i, (engine, *_rest) in enumerate(configs):
            seconds, text = decode(engine, ulaw)
            times[i].append(seconds)
            hyps[i].append(normalise(text))
    refs = [normalise(text) for text, _ in utterances]
    audio_s = sum(len(ulaw) for _, ulaw in utterances) / 8000
    return [
        {
            "p50_ms": percentile(ts, 50) * 1000,
            "p95_ms": percentile(ts, 95) * 1000,
            "mean_ms": statistics.fmean(ts) * 1000,
            "rtf": sum(ts) / audio_s,
            "wer": float(jiwer.wer(refs, hs)),
            "loops": sum(
                len(h.split()) > 1.5 * len(r.split()) + 2 for h, r in zip(hs, refs, strict=True)
            ),
        }
        for ts, hs in zip(times, hyps, strict=True)
    ]


def run_noise(configs: list[Config], utterances: list[bytes]) -> list[tuple[float, int]]:
    """Mean time per noise-only utterance, and how many came back with words."""
    out = []
    for engine, *_rest in configs:
        runs = [decode(engine, ulaw) for ulaw in utterances]
        out.append((statistics.fmean(t for t, _ in runs) * 1000, sum(bool(w) for _, w in runs)))
    return out


def table(title: str, configs: list[Config], rows: list[dict[str, float]]) -> None:
    print(f"\n{title}\n")
    print(
        "| model | device | compute | beam | vad_filter | window s | p50 ms | p95 ms | mean ms "
        "| RTF | WER | loops |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (engine, beam, vad, window), s in zip(configs, rows, strict=True):
        print(
            f"| {engine.name} | {engine.device} | {engine.compute_type} | {beam} | "
            f"{'on' if vad else 'off'} | {window:g} | {s['p50_ms']:.0f} | {s['p95_ms']:.0f} | "
            f"{s['mean_ms']:.0f} | {s['rtf']:.3f} | {s['wer']:.3f} | {s['loops']:.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--beams", default="1,5", help="beam sizes to compare")
    parser.add_argument("--vad", default="off,on", help="vad_filter values to compare")
    parser.add_argument("--windows", default="", help="encoder windows (s) to compare")
    parser.add_argument("--repeat", type=int, default=1, help="passes over the sentences")
    parser.add_argument("--voices", default="jm_kumo", help="Kokoro voices, comma-separated")
    parser.add_argument("--long", action="store_true", help="add 6-14 s turns")
    parser.add_argument("--short", action="store_true", help="add short answers and fragments")
    args = parser.parse_args()

    base = SttSettings()
    voices = [v.strip() for v in args.voices.split(",")]
    windows = [float(w) for w in args.windows.split(",")] if args.windows else []
    print("synthesizing utterances…", file=sys.stderr)
    spoken = speak_all(SENTENCES, voices)
    utterances = spoken * args.repeat + (long_turns(spoken, len(SENTENCES)) if args.long else [])
    short = speak_all(SHORT, voices) if args.short else []
    configs: list[Config] = []
    for vad in [v.strip() == "on" for v in args.vad.split(",")]:
        for beam in [int(b) for b in args.beams.split(",")]:
            for window in windows or [base.encoder_window_s]:
                settings = base.model_copy(
                    update={"beam_size": beam, "vad_filter": vad, "encoder_window_s": window}
                )
                engine = WhisperEngine(settings)
                engine.warm_up()
                configs.append((engine, beam, vad, window))
    audio_total = sum(len(u) for _, u in utterances) / 8000
    table(
        f"{len(utterances)} utterances, {audio_total:.1f} s of audio, "
        f"mean {audio_total / len(utterances):.2f} s",
        configs,
        run(configs, utterances),
    )
    if short:
        table(f"{len(short)} short answers and fragments", configs, run(configs, short))
    noise = noise_utterances()
    print(f"\nnoise only ({len(noise)} utterances)\n")
    print("| beam | vad_filter | window s | mean ms | with words |")
    print("|---|---|---|---|---|")
    for (_, beam, vad, window), (ms, worded) in zip(
        configs, run_noise(configs, noise), strict=True
    ):
        print(f"| {beam} | {'on' if vad else 'off'} | {window:g} | {ms:.0f} | {worded} |")


if __name__ == "__main__":
    main()
