"""Generate the development set: Kokoro speaks each chunk, the chunks are joined with
exact silences, and the clip goes through a telephone line (8 kHz, ~300-3400 Hz, line
noise, some hum, mu-law).

Every random choice (voice, speed, pauses, level, noise) is drawn from a generator seeded
by the set's seed and the case id, so one case never changes because another was added.
Synthesized chunks are cached on disk by (model, voice, speed, text), so a rebuild costs
Kokoro time only for new or changed chunks.
"""

from __future__ import annotations

import hashlib
import json
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dealerline_common.audio import SAMPLE_RATE, float_to_pcm16, pcm16_to_ulaw, resample
from dealerline_common.models import (
    KOKORO_INT8_SHA256,
    KOKORO_SAMPLE_RATE,
    bundled_voices_path,
    default_cache_dir,
    kokoro_int8_path,
)

from . import channel
from .cases import all_cases
from .spec import CaseSpec, Chunk

SEED = 15
VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
SPEED_RANGE = (0.85, 1.2)
LEAD_MS = (300, 600)
TRAIL_MS = (2500, 2600)
PAUSE_MS = (300, 1150)
LEVEL_DBFS = (-24.0, -18.0)  # active speech RMS
SNR_DB = (20.0, 35.0)
HUM_SHARE = 0.3  # of the cases carry mains hum
HUM_DB = (-45.0, -35.0)  # relative to the speech level
MANIFEST = "manifest.json"
FORMAT_VERSION = 1

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Draw:
    """The random choices for one case."""

    voice: str
    speed: float
    lead_ms: int
    trail_ms: int
    pauses_ms: tuple[int, ...]
    level_dbfs: float
    snr_db: float
    noise: str
    hum_hz: int | None
    hum_db: float | None


def case_rng(case_id: str, seed: int = SEED) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(case_id.encode())])


def draw(spec: CaseSpec, seed: int = SEED) -> Draw:
    rng = case_rng(spec.id, seed)
    voice = VOICES[int(rng.integers(len(VOICES)))]
    speed = round(float(rng.uniform(*SPEED_RANGE)), 2)
    lead = int(rng.integers(LEAD_MS[0], LEAD_MS[1] + 1))
    trail = int(rng.integers(TRAIL_MS[0], TRAIL_MS[1] + 1))
    pauses = tuple(
        10 * int(rng.integers(PAUSE_MS[0] // 10, PAUSE_MS[1] // 10 + 1))
        for _ in range(len(spec.chunks) - 1)
    )
    level = round(float(rng.uniform(*LEVEL_DBFS)), 1)
    snr = round(float(rng.uniform(*SNR_DB)), 1)
    noise = "pink" if rng.random() < 0.5 else "white"
    has_hum = bool(rng.random() < HUM_SHARE)
    hum_hz = (60 if rng.random() < 0.7 else 50) if has_hum else None
    hum_db = round(float(rng.uniform(*HUM_DB)), 1) if has_hum else None
    return Draw(
        spec.voice or voice,
        spec.speed or speed,
        lead,
        trail,
        pauses,
        level,
        snr,
        noise,
        hum_hz,
        hum_db,
    )


class Synth:
    """Kokoro (int8, embedded) with an on-disk cache of the raw 24 kHz float audio."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir or default_cache_dir() / "devset-tts"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._kokoro: Any = None
        self.synthesized = 0
        self.cached = 0
        self.seconds = 0.0

    def _key(self, chunk: Chunk, voice: str, speed: float) -> str:
        said = f"phonemes:{chunk.phonemes}" if chunk.phonemes else f"text:{chunk.text}"
        raw = f"{KOKORO_INT8_SHA256}|{voice}|{speed:.2f}|en-us|{said}"
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    def __call__(self, chunk: Chunk, voice: str, speed: float) -> np.ndarray:
        path = self.cache_dir / f"{self._key(chunk, voice, speed)}.npy"
        if path.exists():
            self.cached += 1
            cached: np.ndarray = np.load(path)
            return cached
        if self._kokoro is None:
            from kokoro_onnx import Kokoro

            self._kokoro = Kokoro(str(kokoro_int8_path()), str(bundled_voices_path()))
        started = time.monotonic()
        said = chunk.phonemes or chunk.text
        audio, rate = self._kokoro.create(
            said, voice=voice, speed=speed, lang="en-us", is_phonemes=chunk.phonemes is not None
        )
        self.seconds += time.monotonic() - started
        if int(rate) != KOKORO_SAMPLE_RATE:
            raise RuntimeError(f"Kokoro answered at {rate} Hz, expected {KOKORO_SAMPLE_RATE}")
        out = np.asarray(audio, dtype=np.float32)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, out)
        tmp.replace(path)
        self.synthesized += 1
        return out


@dataclass(frozen=True)
class Rendered:
    ulaw: bytes
    measured: channel.Measured


def compose(chunks: list[np.ndarray], d: Draw) -> tuple[np.ndarray, list[float]]:
    """Trimmed chunks joined by the drawn silences, with lead and trail, at 24 kHz; and the
    midpoint (ms) of each pause."""
    per_ms = KOKORO_SAMPLE_RATE // 1000
    parts = [np.zeros(d.lead_ms * per_ms)]
    mids: list[float] = []
    at = d.lead_ms * per_ms
    for i, audio in enumerate(chunks):
        sound = channel.trim(audio, KOKORO_SAMPLE_RATE)
        parts.append(sound)
        at += sound.size
        if i < len(d.pauses_ms):
            gap = d.pauses_ms[i] * per_ms
            parts.append(np.zeros(gap))
            mids.append((at + gap / 2) / per_ms)
            at += gap
    parts.append(np.zeros(d.trail_ms * per_ms))
    return np.concatenate(parts), mids


def clean_line(chunks: list[np.ndarray], d: Draw) -> tuple[np.ndarray, channel.Measured]:
    """The clip at 8 kHz in the telephone band at its speech level, before any noise, and
    where its sound is."""
    clip, mids = compose(chunks, d)
    clean = channel.phone_band(resample(clip, KOKORO_SAMPLE_RATE, SAMPLE_RATE), SAMPLE_RATE)
    clean *= 10.0 ** (d.level_dbfs / 20.0) / channel.active_rms(clean, SAMPLE_RATE)
    return clean, channel.measure(clean, SAMPLE_RATE, mids)


def add_line(clean: np.ndarray, d: Draw, rng: np.random.Generator) -> bytes:
    """Line noise at the drawn SNR (against the speech level), hum for some, mu-law."""
    level = 10.0 ** (d.level_dbfs / 20.0)
    noise = channel.phone_band(channel.unit_noise(rng, clean.size, d.noise), SAMPLE_RATE)
    noise *= level * 10.0 ** (-d.snr_db / 20.0) / float(np.sqrt(np.mean(noise**2)))
    line = clean + noise
    if d.hum_hz is not None and d.hum_db is not None:
        hum = channel.unit_hum(rng, clean.size, SAMPLE_RATE, float(d.hum_hz))
        line += hum * level * 10.0 ** (d.hum_db / 20.0)
    peak = float(np.max(np.abs(line)))
    if peak > 0.99:
        line *= 0.99 / peak
    return pcm16_to_ulaw(float_to_pcm16(line))


def render(chunks: list[np.ndarray], d: Draw, rng: np.random.Generator) -> Rendered:
    """Through the telephone line: 8 kHz, band, level, measurement, noise, hum, mu-law."""
    clean, measured = clean_line(chunks, d)
    return Rendered(add_line(clean, d, rng), measured)


def entry(spec: CaseSpec, d: Draw, r: Rendered, audio_name: str) -> dict[str, Any]:
    """The manifest record of one case."""
    m = r.measured
    return {
        "id": spec.id,
        "kind": spec.kind,
        "expects": spec.expects,
        "text": spec.text,
        "value": spec.value,
        "voice": d.voice,
        "speed": d.speed,
        "level_dbfs": d.level_dbfs,
        "snr_db": d.snr_db,
        "noise": d.noise,
        "hum_hz": d.hum_hz,
        "hum_db": d.hum_db,
        "lead_ms": d.lead_ms,
        "pauses_ms": list(d.pauses_ms),
        "speech_start_ms": m.speech_start_ms,
        "true_end_ms": m.true_end_ms,
        "pause_spans_ms": [list(s) for s in m.pause_spans_ms],
        "duration_ms": len(r.ulaw) * 1000.0 / SAMPLE_RATE,
        "audio": audio_name,
        "sha256": hashlib.sha256(r.ulaw).hexdigest(),
    }


def build_case(spec: CaseSpec, synth: Synth, seed: int = SEED) -> tuple[Draw, Rendered]:
    d = draw(spec, seed)
    chunks = [synth(c, d.voice, d.speed) for c in spec.chunks]
    return d, render(chunks, d, case_rng(spec.id + "/line", seed))


def build(
    out_dir: Path,
    *,
    only: set[str] | None = None,
    synth: Synth | None = None,
    progress: Progress | None = None,
    seed: int = SEED,
) -> dict[str, Any]:
    """Write every case's ``<id>.ulaw`` and the manifest into ``out_dir``; return the
    manifest. With ``only``, just those cases (and the manifest lists just them)."""
    specs = [s for s in all_cases() if only is None or s.id in only]
    if only is not None and len(specs) != len(only):
        missing = sorted(only - {s.id for s in specs})
        raise ValueError(f"unknown case ids: {', '.join(missing)}")
    synth = synth or Synth()
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for n, spec in enumerate(specs, start=1):
        d, r = build_case(spec, synth, seed)
        name = f"{spec.id}.ulaw"
        (out_dir / name).write_bytes(r.ulaw)
        records.append(entry(spec, d, r, name))
        if progress:
            progress(
                f"[{n}/{len(specs)}] {spec.id}: {len(spec.chunks)} chunk(s), "
                f"{len(r.ulaw) / SAMPLE_RATE:.1f} s, kokoro {synth.seconds:.0f} s so far"
            )
    manifest = {
        "version": FORMAT_VERSION,
        "sample_rate": SAMPLE_RATE,
        "encoding": "mulaw",
        "seed": seed,
        "cases": records,
    }
    if only is None:  # a whole rebuild leaves no audio of cases that are gone
        keep = {r["audio"] for r in records}
        for stale in out_dir.glob("*.ulaw"):
            if stale.name not in keep:
                stale.unlink()
    tmp = out_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.replace(out_dir / MANIFEST)
    return manifest
