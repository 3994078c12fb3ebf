import audioop  # deprecated, but the reference codec we must agree with bit for bit

import numpy as np
import pytest

from dealerline_common import audio


def test_ulaw_encode_matches_reference_for_every_sample() -> None:
    everything = np.arange(-32768, 32768, dtype=np.int16)
    assert audio.pcm16_to_ulaw(everything) == audioop.lin2ulaw(everything.tobytes(), 2)


def test_ulaw_decode_matches_reference_for_every_code() -> None:
    codes = bytes(range(256))
    assert audio.ulaw_to_pcm16(codes).tobytes() == audioop.ulaw2lin(codes, 2)


def test_silence_code_decodes_to_zero() -> None:
    assert audio.ulaw_to_pcm16(bytes([audio.ULAW_SILENCE]))[0] == 0


def test_roundtrip_error_is_small() -> None:
    t = np.arange(8000) / 8000
    x = audio.float_to_pcm16(0.5 * np.sin(2 * np.pi * 440 * t))
    y = audio.ulaw_to_pcm16(audio.pcm16_to_ulaw(x))
    snr = 10 * np.log10(np.sum(x.astype(float) ** 2) / np.sum((x.astype(float) - y) ** 2))
    assert snr > 30


def test_resample_24k_to_8k_keeps_duration_and_tone() -> None:
    t = np.arange(24000) / 24000
    x = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    y = audio.resample(x, 24000, 8000)
    assert len(y) == 8000
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(int(np.argmax(spectrum)) - 1000) <= 1


def test_float_to_ulaw_normalises_peaks() -> None:
    loud = np.full(2400, 3.0, dtype=np.float32)
    pcm = audio.ulaw_to_pcm16(audio.float_to_ulaw(loud, 24000))
    assert np.max(np.abs(pcm)) < 32767


@pytest.mark.parametrize("n", [0, 1, 159, 160, 161, 479])
def test_frames_are_whole_and_padded_with_silence(n: int) -> None:
    data = bytes([0x10]) * n
    frames = audio.frames(data)
    assert all(len(f) == audio.FRAME_BYTES for f in frames)
    assert b"".join(frames)[:n] == data
    assert set(b"".join(frames)[n:]) <= {audio.ULAW_SILENCE}


def test_chunks_are_whole_frames() -> None:
    chunks = audio.chunks(bytes(1000), 2)
    assert [len(c) for c in chunks] == [320, 320, 320, 160]
    with pytest.raises(ValueError):
        audio.chunks(b"x", 0)


def test_rms() -> None:
    assert audio.rms(np.zeros(10, dtype=np.int16)) == 0.0
    assert audio.rms(np.full(10, 100, dtype=np.int16)) == pytest.approx(100.0)
