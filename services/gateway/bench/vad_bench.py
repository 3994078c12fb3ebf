"""VAD benchmark: a plain energy threshold (the baseline) vs webrtcvad (modes 1-3) vs Silero.

Builds labelled telephone audio (Kokoro speech -> 8 kHz -> mu-law, with silence between
utterances, mixed with white or pink noise at 20 and 10 dB SNR, plus a quiet talker),
feeds every detector the 20 ms frames exactly as the gateway sees them (mu-law decoded)
and reports:

- frame accuracy, speech recall, false-positive rate on non-speech frames;
- through the same :class:`Endpointer`: speech-onset delay (first true voiced frame ->
  onset declared), endpoint delay (last true voiced frame -> end declared), utterances
  missed / split / clipped at the start, and false triggers (utterances with no speech);
- CPU cost per 20 ms frame.

Run: ``cd /work/main && uv run python services/gateway/bench/vad_bench.py``
(Silero comes from the ONNX file faster-whisper ships; the gateway itself does not
depend on faster-whisper.)  Synthesized speech is cached under ``bench/.cache``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from dealerline_common import audio
from dealerline_gateway.vad import (
    Endpointer,
    EndpointerConfig,
    EnergyVad,
    FrameVad,
    Utterance,
    WebRtcVad,
)

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"

SENTENCES = [
    "Hi, I'd like to book an oil change for my Camry next Tuesday morning.",
    "Yes.",
    "Do you have any used pickup trucks under thirty thousand dollars?",
    "My name is Daniel, and my number ends in four five six.",
    "Actually, could I talk to somebody in the service department, please?",
    "No, that's all. Thanks.",
    "What time do you close on Saturdays? And are you open on Sunday?",
    "The check engine light came on yesterday, and the car is making a strange noise.",
]
GAPS_S = [2.0, 1.6, 2.4, 1.2, 3.0, 1.8, 2.2, 1.5, 2.0]  # before each sentence, then after


# --------------------------------------------------------------------------- audio


def synthesize(cache: Path) -> list[npt.NDArray[np.float32]]:
    """Each sentence as 8 kHz float audio, synthesized once with the embedded Kokoro."""
    cache.mkdir(parents=True, exist_ok=True)
    out: list[npt.NDArray[np.float32]] = []
    kokoro = None
    for i, text in enumerate(SENTENCES):
        path = cache / f"s{i}.npy"
        if path.exists():
            out.append(np.load(path))
            continue
        if kokoro is None:
            from kokoro_onnx import Kokoro

            from dealerline_common.models import bundled_voices_path, kokoro_int8_path

            kokoro = Kokoro(str(kokoro_int8_path()), str(bundled_voices_path()))
        samples, rate = kokoro.create(text, voice="jm_kumo", speed=1.0, lang="en-us")
        x = audio.resample(samples, rate, audio.SAMPLE_RATE)
        np.save(path, x)
        out.append(x)
    return out


def frame_rms(x: npt.NDArray[np.floating], n: int = audio.FRAME_BYTES) -> npt.NDArray[np.float64]:
    usable = len(x) // n * n
    f = np.asarray(x[:usable], dtype=np.float64).reshape(-1, n)
    return np.asarray(np.sqrt(np.mean(f**2, axis=1)), dtype=np.float64)


@dataclass
class Scene:
    name: str
    ulaw: bytes
    labels: npt.NDArray[np.bool_]  # per 20 ms frame: true speech
    segments: list[tuple[int, int]]  # true utterances: first and last voiced frame


def pink_noise(n: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1]
    pink = np.fft.irfft(spectrum / np.sqrt(f), n)
    return np.asarray(pink / np.std(pink))


def build_scene(
    speech: list[npt.NDArray[np.float32]],
    name: str,
    *,
    speech_rms: float,
    noise: str | None,
    snr_db: float | None,
    seed: int = 7,
) -> Scene:
    rng = np.random.default_rng(seed)
    fb = audio.FRAME_BYTES
    parts: list[npt.NDArray[np.float64]] = []
    labels: list[npt.NDArray[np.bool_]] = []
    segments: list[tuple[int, int]] = []
    pos = 0

    def add_silence(seconds: float) -> None:
        nonlocal pos
        n = int(seconds * audio.SAMPLE_RATE) // fb * fb
        parts.append(np.zeros(n))
        labels.append(np.zeros(n // fb, dtype=bool))
        pos += n // fb

    for i, s in enumerate(speech):
        add_silence(GAPS_S[i])
        x = np.asarray(s, dtype=np.float64)
        x = np.concatenate([x, np.zeros((-len(x)) % fb)])
        r = frame_rms(x)
        active_level = float(np.sqrt(np.mean(r[r > r.max() * 0.05] ** 2)))
        x = x * (speech_rms / active_level)
        r = frame_rms(x)
        # ground truth: a frame is speech when it is within 35 dB of the loudest frame
        lab = 20 * np.log10(np.maximum(r, 1e-9)) > 20 * np.log10(r.max()) - 35
        voiced = np.flatnonzero(lab)
        segments.append((pos + int(voiced[0]), pos + int(voiced[-1])))
        parts.append(x)
        labels.append(lab)
        pos += len(lab)
    add_silence(GAPS_S[len(speech)])
    clean = np.concatenate(parts)
    label = np.concatenate(labels)
    mixed = clean + rng.standard_normal(len(clean)) * 3.0  # line hiss, about -80 dBFS
    if noise is not None and snr_db is not None:
        n = rng.standard_normal(len(clean)) if noise == "white" else pink_noise(len(clean), rng)
        noise_rms = speech_rms / (10 ** (snr_db / 20))
        mixed = mixed + n * noise_rms
    pcm = np.clip(mixed, -32768, 32767).astype(np.int16)
    return Scene(name, audio.pcm16_to_ulaw(pcm), label, segments)


# --------------------------------------------------------------------------- silero


class SileroOnnxVad:
    """Streaming Silero v6 (faster-whisper's ONNX export, 16 kHz, 512-sample windows with
    64 samples of context): each 20 ms 8 kHz frame is upsampled and appended; a frame's
    decision is the probability of the latest complete 32 ms window."""

    def __init__(self, threshold: float = 0.5) -> None:
        import onnxruntime
        from faster_whisper.vad import get_assets_path

        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 4
        self.session = onnxruntime.InferenceSession(
            os.path.join(get_assets_path(), "silero_vad_v6.onnx"),
            providers=["CPUExecutionProvider"],
            sess_options=opts,
        )
        self.threshold = threshold
        self.name = f"silero-v6>{threshold:g}"
        self.reset()

    def reset(self) -> None:
        import soxr

        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._ctx = np.zeros(64, dtype=np.float32)
        self._buf = np.zeros(0, dtype=np.float32)
        self._prob = 0.0
        self._rs = soxr.ResampleStream(8000, 16000, 1, dtype="float32", quality="HQ")

    def is_speech(self, pcm: audio.Int16Array) -> bool:
        x16 = self._rs.resample_chunk(audio.pcm16_to_float(pcm))
        self._buf = np.concatenate([self._buf, x16])
        while len(self._buf) >= 512:
            win, self._buf = self._buf[:512], self._buf[512:]
            inp = np.concatenate([self._ctx, win])[None, :].astype(np.float32)
            out, self._h, self._c = self.session.run(
                None, {"input": inp, "h": self._h, "c": self._c}
            )
            self._ctx = win[-64:]
            self._prob = float(np.asarray(out).reshape(-1)[-1])
        return self._prob > self.threshold


# --------------------------------------------------------------------------- scoring


@dataclass
class Score:
    detector: str
    scene: str
    frame_acc: float
    recall: float
    fp_rate: float
    onset_ms: list[float]
    endpoint_ms: list[float]
    clipped: int
    missed: int
    split: int
    false_triggers: int
    us_per_frame: float


def run_detector(
    vad: FrameVad, scene: Scene, cfg: EndpointerConfig
) -> tuple[npt.NDArray[np.bool_], list[Utterance], float]:
    vad.reset()
    ep = Endpointer(cfg)
    frames = audio.frames(scene.ulaw)
    decisions = np.zeros(len(frames), dtype=bool)
    utts: list[Utterance] = []
    spent = 0.0
    for i, fr in enumerate(frames):
        pcm = audio.ulaw_to_pcm16(fr)
        t0 = time.perf_counter()
        v = vad.is_speech(pcm)
        spent += time.perf_counter() - t0
        decisions[i] = v
        for ev in ep.feed(fr, v, i * 0.02):
            if isinstance(ev, Utterance):
                utts.append(ev)
    last = ep.flush(len(frames) * 0.02)
    if isinstance(last, Utterance):
        utts.append(last)
    return decisions, utts, spent / len(frames) * 1e6


def score(name: str, vad: FrameVad, scene: Scene, cfg: EndpointerConfig) -> Score:
    dec, utts, us = run_detector(vad, scene, cfg)
    lab = scene.labels[: len(dec)]
    dec = dec[: len(lab)]
    onset: list[float] = []
    endpoint: list[float] = []
    clipped = missed = split = 0
    matched: set[int] = set()
    for a, b in scene.segments:
        hits = [
            (k, u)
            for k, u in enumerate(utts)
            if u.start_index <= b + 2 and u.last_voiced_index >= a - 2
        ]
        if not hits:
            missed += 1
            continue
        matched.update(k for k, _ in hits)
        split += len(hits) - 1
        first, last = hits[0][1], hits[-1][1]
        onset.append((first.onset_index - a) * 20.0)
        endpoint.append((last.end_index - b) * 20.0)
        if first.start_index > a:
            clipped += 1
    false_triggers = len(utts) - len(matched)
    return Score(
        detector=name,
        scene=scene.name,
        frame_acc=float(np.mean(dec == lab)),
        recall=float(np.mean(dec[lab])) if lab.any() else 0.0,
        fp_rate=float(np.mean(dec[~lab])) if (~lab).any() else 0.0,
        onset_ms=onset,
        endpoint_ms=endpoint,
        clipped=clipped,
        missed=missed,
        split=split,
        false_triggers=false_triggers,
        us_per_frame=us,
    )


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--no-silero", action="store_true")
    ap.add_argument("--json", type=Path, help="also write all scores here")
    ap.add_argument("--hangover-sweep", action="store_true", help="sweep the end silence")
    args = ap.parse_args()

    speech = synthesize(CACHE)
    scenes = [
        build_scene(speech, "clean", speech_rms=2500, noise=None, snr_db=None),
        build_scene(speech, "quiet-talker", speech_rms=700, noise=None, snr_db=None),
        build_scene(speech, "white-20dB", speech_rms=2500, noise="white", snr_db=20),
        build_scene(speech, "pink-20dB", speech_rms=2500, noise="pink", snr_db=20),
        build_scene(speech, "white-10dB", speech_rms=2500, noise="white", snr_db=10),
        build_scene(speech, "pink-10dB", speech_rms=2500, noise="pink", snr_db=10),
    ]
    # The baseline: any loud frame starts speech, 30 quiet frames end it, 5 frames minimum.
    baseline_cfg = EndpointerConfig(
        start_frames=1,
        start_window=1,
        end_silence_frames=30,
        min_speech_frames=5,
        preroll_frames=0,
        tail_frames=30,
    )
    vad_cfg = EndpointerConfig(end_silence_frames=30)
    detectors: list[tuple[str, Callable[[], FrameVad], EndpointerConfig]] = [
        ("energy>500 (baseline)", lambda: EnergyVad(500), baseline_cfg),
        ("webrtcvad-1", lambda: WebRtcVad(1), vad_cfg),
        ("webrtcvad-2", lambda: WebRtcVad(2), vad_cfg),
        ("webrtcvad-3", lambda: WebRtcVad(3), vad_cfg),
    ]
    if not args.no_silero:
        detectors.append(("silero-v6 0.5", lambda: SileroOnnxVad(0.5), vad_cfg))
        detectors.append(("silero-v6 0.3", lambda: SileroOnnxVad(0.3), vad_cfg))
    results: list[Score] = []
    print(
        f"# machine: {platform.machine()} {os.cpu_count()} CPUs, python {platform.python_version()}"
    )
    print(f"# scenes: {len(SENTENCES)} Kokoro utterances (jm_kumo) each, gaps 1.2-3.0 s")
    header = (
        f"{'detector':<18} {'scene':<13} {'acc':>5} {'recall':>6} {'fp':>5} "
        f"{'onset':>6} {'endpt':>6} {'miss':>4} {'split':>5} {'clip':>4} {'false':>5} {'us/fr':>6}"
    )
    print(header)
    for name, make, cfg in detectors:
        for scene in scenes:
            s = score(name, make(), scene, cfg)
            results.append(s)
            print(
                f"{name:<18} {scene.name:<13} {s.frame_acc:5.3f} {s.recall:6.3f} {s.fp_rate:5.3f} "
                f"{med(s.onset_ms):6.0f} {med(s.endpoint_ms):6.0f} {s.missed:4d} {s.split:5d} "
                f"{s.clipped:4d} {s.false_triggers:5d} {s.us_per_frame:6.1f}"
            )
    print("\n# summary over all scenes (onset/endpoint: median ms; counts summed)")
    for name, _, _ in detectors:
        rs = [r for r in results if r.detector == name]
        print(
            f"{name:<18} acc={statistics.mean(r.frame_acc for r in rs):.3f} "
            f"onset={med([x for r in rs for x in r.onset_ms]):.0f} "
            f"endpoint={med([x for r in rs for x in r.endpoint_ms]):.0f} "
            f"missed={sum(r.missed for r in rs)} split={sum(r.split for r in rs)} "
            f"clipped={sum(r.clipped for r in rs)} false={sum(r.false_triggers for r in rs)} "
            f"us/frame={statistics.mean(r.us_per_frame for r in rs):.1f}"
        )
    if args.hangover_sweep:
        print("\n# hangover sweep, webrtcvad-3 (splits = utterances cut mid-sentence)")
        for ms in (300, 400, 500, 540, 560, 580, 600, 700):
            cfg = EndpointerConfig(end_silence_frames=ms // 20)
            rs = [score("webrtcvad-3", WebRtcVad(3), sc, cfg) for sc in scenes]
            print(
                f"end_silence={ms}ms endpoint={med([x for r in rs for x in r.endpoint_ms]):.0f} "
                f"split={sum(r.split for r in rs)} missed={sum(r.missed for r in rs)} "
                f"false={sum(r.false_triggers for r in rs)}"
            )
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=1))


if __name__ == "__main__":
    main()
