"""Telephone audio: G.711 mu-law codec by lookup tables, soxr resampling, 20 ms framing.

Twilio Media Streams carry 8 kHz mono mu-law, 160 bytes per 20 ms frame.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

SAMPLE_RATE = 8000
FRAME_MS = 20
FRAME_BYTES = SAMPLE_RATE * FRAME_MS // 1000  # 160 mu-law bytes = 160 samples
ULAW_SILENCE = 0xFF  # mu-law code of a zero sample

Int16Array = npt.NDArray[np.int16]
Float32Array = npt.NDArray[np.float32]

_BIAS = 0x84


def _build_decode_table() -> Int16Array:
    codes = np.arange(256, dtype=np.int32)
    u = ~codes & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def _build_encode_table() -> npt.NDArray[np.uint8]:
    # G.711 on the 14-bit magnitude, exactly as the reference (and CPython's audioop) does.
    # Indexed by the int16 sample reinterpreted as uint16 (two's complement).
    samples = np.arange(65536, dtype=np.int32)
    samples = np.where(samples >= 32768, samples - 65536, samples) >> 2
    mask = np.where(samples < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(samples), 8159) + (_BIAS >> 2)
    seg_ends = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
    seg = np.searchsorted(seg_ends, magnitude, side="left")
    uval = np.where(seg >= 8, 0x7F, (seg << 4) | ((magnitude >> (seg + 1)) & 0x0F))
    return ((uval ^ mask) & 0xFF).astype(np.uint8)


ULAW_DECODE: Int16Array = _build_decode_table()
ULAW_ENCODE: npt.NDArray[np.uint8] = _build_encode_table()


def ulaw_to_pcm16(data: bytes) -> Int16Array:
    """Decode mu-law bytes to 16-bit linear PCM samples."""
    return ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def pcm16_to_ulaw(samples: Int16Array) -> bytes:
    """Encode 16-bit linear PCM samples to mu-law bytes."""
    return bytes(ULAW_ENCODE[np.asarray(samples, dtype=np.int16).view(np.uint16)])


def float_to_pcm16(samples: npt.NDArray[np.floating]) -> Int16Array:
    """[-1, 1] floats to int16, clipping anything outside."""
    out: Int16Array = (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)
    return out


def pcm16_to_float(samples: Int16Array) -> Float32Array:
    return (samples.astype(np.float32) / 32768.0).astype(np.float32)


def resample(samples: npt.NDArray[np.floating], src_rate: int, dst_rate: int) -> Float32Array:
    """High-quality resampling of mono float audio with soxr."""
    x = np.asarray(samples, dtype=np.float32)
    if src_rate == dst_rate or x.size == 0:
        return x
    return np.asarray(soxr.resample(x, src_rate, dst_rate, quality="HQ"), dtype=np.float32)


def float_to_ulaw(samples: npt.NDArray[np.floating], src_rate: int) -> bytes:
    """Any-rate float audio to 8 kHz mu-law, normalised so that peaks never clip."""
    x = resample(samples, src_rate, SAMPLE_RATE)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 0.99:
        x = x * (0.99 / peak)
    return pcm16_to_ulaw(float_to_pcm16(x))


def ulaw_to_float(data: bytes, dst_rate: int = SAMPLE_RATE) -> Float32Array:
    """8 kHz mu-law to float audio at ``dst_rate`` (16 kHz for Whisper)."""
    return resample(pcm16_to_float(ulaw_to_pcm16(data)), SAMPLE_RATE, dst_rate)


def pad_to_frames(data: bytes, frame_bytes: int = FRAME_BYTES) -> bytes:
    """Pad mu-law audio with silence to a whole number of frames."""
    rest = len(data) % frame_bytes
    return data if rest == 0 else data + bytes([ULAW_SILENCE]) * (frame_bytes - rest)


def frames(data: bytes, frame_bytes: int = FRAME_BYTES) -> list[bytes]:
    """Split mu-law audio into frames of ``frame_bytes``, the last padded with silence."""
    padded = pad_to_frames(data, frame_bytes)
    return [padded[i : i + frame_bytes] for i in range(0, len(padded), frame_bytes)]


def chunks(data: bytes, frames_per_chunk: int, frame_bytes: int = FRAME_BYTES) -> list[bytes]:
    """Split into chunks of ``frames_per_chunk`` whole frames (the last may hold fewer)."""
    if frames_per_chunk < 1:
        raise ValueError("frames_per_chunk must be at least 1")
    padded = pad_to_frames(data, frame_bytes)
    size = frame_bytes * frames_per_chunk
    return [padded[i : i + size] for i in range(0, len(padded), size)]


def duration_ms(ulaw: bytes) -> float:
    return len(ulaw) * 1000.0 / SAMPLE_RATE


def rms(samples: Int16Array) -> float:
    """Root mean square of PCM16 samples (the energy measure of the simple threshold VAD)."""
    if samples.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
