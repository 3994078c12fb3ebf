"""Signal work for the development set, in numpy only: trimming synthesized chunks to their
sound, the telephone band, line noise and hum, and measuring where the sound is.

"Sound" is a 5 ms window whose RMS is within ``floor_db`` of the loudest window of the
same signal; chunks are trimmed with a lower floor (-45 dB) than the one that measures the
finished clip (-40 dB), so that a measured end never falls inside a trimmed-off tail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

WINDOW_MS = 5.0
TRIM_FLOOR_DB = -45.0
MEASURE_FLOOR_DB = -40.0
FADE_MS = 2.0
BAND_HZ = (300.0, 3400.0)
EDGE_HZ = 100.0  # width of each raised-cosine band edge


def window_rms(x: npt.ArrayLike, rate: int, window_ms: float = WINDOW_MS) -> FloatArray:
    """RMS of consecutive windows (the last one partial)."""
    a = np.asarray(x, dtype=np.float64)
    win = max(1, round(rate * window_ms / 1000.0))
    pad = (-a.size) % win
    frames = np.pad(a, (0, pad)).reshape(-1, win)
    out: FloatArray = np.sqrt(np.mean(frames**2, axis=1))
    return out


def sound_mask(
    x: npt.ArrayLike, rate: int, floor_db: float = MEASURE_FLOOR_DB
) -> npt.NDArray[np.bool_]:
    """Which windows hold sound: RMS within ``floor_db`` of the loudest window."""
    levels = window_rms(x, rate)
    peak = float(levels.max()) if levels.size else 0.0
    if peak <= 0.0:
        return np.zeros(levels.size, dtype=bool)
    mask: npt.NDArray[np.bool_] = levels >= peak * 10.0 ** (floor_db / 20.0)
    return mask


def trim(x: npt.ArrayLike, rate: int, floor_db: float = TRIM_FLOOR_DB) -> FloatArray:
    """The stretch from the first to the last window of sound, with short fades at the cuts
    (no clicks). Raises on a signal with no sound at all."""
    a = np.asarray(x, dtype=np.float64)
    mask = sound_mask(a, rate, floor_db)
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        raise ValueError("no sound to trim to")
    win = max(1, round(rate * WINDOW_MS / 1000.0))
    out = a[idx[0] * win : min(a.size, (idx[-1] + 1) * win)].copy()
    fade = min(out.size // 2, round(rate * FADE_MS / 1000.0))
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade, endpoint=False)
        out[:fade] *= ramp
        out[-fade:] *= ramp[::-1]
    return out


def band_gain(
    freqs: FloatArray, band: tuple[float, float] = BAND_HZ, edge: float = EDGE_HZ
) -> FloatArray:
    """Gain of the telephone band filter: 1 inside ``band``, 0 outside, raised-cosine edges
    ``edge`` Hz wide centred on each band limit."""
    lo, hi = band
    gain = np.zeros_like(freqs)
    gain[(freqs >= lo + edge / 2) & (freqs <= hi - edge / 2)] = 1.0
    for centre, rising in ((lo, True), (hi, False)):
        inside = np.abs(freqs - centre) < edge / 2
        phase = (freqs[inside] - (centre - edge / 2)) / edge  # 0 → 1 across the edge
        ramp = 0.5 - 0.5 * np.cos(np.pi * phase)
        gain[inside] = ramp if rising else 1.0 - ramp
    return gain


def phone_band(x: npt.ArrayLike, rate: int) -> FloatArray:
    """Band-limit to the telephone band (~300-3400 Hz) by a zero-phase FFT filter. The
    signal is zero-padded to twice its length, so nothing wraps around."""
    a = np.asarray(x, dtype=np.float64)
    n = 1 << int(np.ceil(np.log2(max(2, 2 * a.size))))
    spectrum = np.fft.rfft(a, n)
    spectrum *= band_gain(np.fft.rfftfreq(n, 1.0 / rate).astype(np.float64))
    out: FloatArray = np.fft.irfft(spectrum, n)[: a.size]
    return out


def unit_noise(rng: np.random.Generator, n: int, color: str) -> FloatArray:
    """``n`` samples of white or pink (1/f power) Gaussian noise at RMS 1."""
    white = rng.standard_normal(n)
    if color == "white":
        shaped = white
    elif color == "pink":
        spectrum = np.fft.rfft(white)
        f = np.arange(spectrum.size, dtype=np.float64)
        f[0] = 1.0
        shaped = np.fft.irfft(spectrum / np.sqrt(f), n)
    else:
        raise ValueError(f"unknown noise colour {color!r}")
    rms = float(np.sqrt(np.mean(shaped**2)))
    out: FloatArray = shaped / rms
    return out


def unit_hum(rng: np.random.Generator, n: int, rate: int, hz: float) -> FloatArray:
    """Mains hum at ``hz`` with odd harmonics up to the band (random phases), RMS 1."""
    t = np.arange(n, dtype=np.float64) / rate
    hum = np.zeros(n)
    for k, level in ((1, 1.0), (3, 0.5), (5, 0.35), (7, 0.2)):
        hum += level * np.sin(2 * np.pi * hz * k * t + rng.uniform(0, 2 * np.pi))
    out: FloatArray = hum / float(np.sqrt(np.mean(hum**2)))
    return out


def active_rms(x: npt.ArrayLike, rate: int) -> float:
    """RMS over the windows that hold sound (the speech level an SNR is measured against)."""
    a = np.asarray(x, dtype=np.float64)
    mask = sound_mask(a, rate)
    levels = window_rms(a, rate)
    if not mask.any():
        return 0.0
    return float(np.sqrt(np.mean(levels[mask] ** 2)))


@dataclass(frozen=True)
class Measured:
    speech_start_ms: float
    true_end_ms: float
    pause_spans_ms: tuple[tuple[float, float], ...]


def measure(x: npt.ArrayLike, rate: int, pause_mids_ms: list[float]) -> Measured:
    """Where the sound starts and ends, and the silent stretch around each designed pause
    (given by its midpoint): windows of sound by :data:`MEASURE_FLOOR_DB`."""
    mask = sound_mask(x, rate)
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        raise ValueError("no sound to measure")
    start, end = int(idx[0]), int(idx[-1]) + 1
    spans: list[tuple[float, float]] = []
    for mid_ms in pause_mids_ms:
        at = int(mid_ms // WINDOW_MS)
        if not start < at < end or mask[at]:
            raise ValueError(f"the pause around {mid_ms:.0f} ms is not silent")
        lo = at
        while mask[lo - 1] == 0:
            lo -= 1
        hi = at
        while mask[hi] == 0:
            hi += 1
        spans.append((lo * WINDOW_MS, hi * WINDOW_MS))
    return Measured(start * WINDOW_MS, end * WINDOW_MS, tuple(spans))
