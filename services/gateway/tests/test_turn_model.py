"""Smart Turn v3.2: its Whisper features against faster-whisper's, its input window, and
the real model on speech from the embedded Kokoro (complete sentences against the same
kind of speech cut off mid-phrase), including what feeding it the wrong rate does."""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from faster_whisper.feature_extractor import FeatureExtractor

from dealerline_common import audio
from dealerline_common.models import ModelError
from dealerline_gateway import turn_model
from dealerline_gateway.turn_model import SmartTurn, TurnModel

# (complete, the same kind of answer cut off mid-phrase)
PAIRS = [
    ("I would like to book an oil change for Tuesday.", "My phone number is five five five"),
    ("Can you tell me what time you close on Saturday?", "I was wondering if you could"),
    ("No, that's everything.", "I need the brakes checked and"),
    ("My name is Daniel Carter.", "My name is Daniel and my number is"),
]
PAUSE_S = 0.2  # the gateway asks the model after 200 ms of silence


def _trim_trailing_quiet(ulaw: bytes) -> bytes:
    """Kokoro's output without its trailing near-silence (whole 20 ms frames)."""
    pcm = audio.ulaw_to_pcm16(audio.pad_to_frames(ulaw)).astype(np.float64)
    rms = np.sqrt((pcm.reshape(-1, audio.FRAME_BYTES) ** 2).mean(axis=1))
    last = int(np.flatnonzero(rms > 0.05 * rms.max())[-1]) + 1
    return ulaw[: last * audio.FRAME_BYTES]


@pytest.fixture(scope="module")
def speech() -> dict[str, bytes]:
    """Every phrase as the gateway would hold it at the probe: 8 kHz mu-law speech, then
    200 ms of silence."""
    from kokoro_onnx import Kokoro

    from dealerline_common.models import bundled_voices_path, kokoro_int8_path

    kokoro = Kokoro(str(kokoro_int8_path()), str(bundled_voices_path()))
    out: dict[str, bytes] = {}
    for text in [t for pair in PAIRS for t in pair]:
        samples, rate = kokoro.create(text, voice="jm_kumo", speed=1.0, lang="en-us")
        ulaw = audio.float_to_ulaw(np.asarray(samples, dtype=np.float32), int(rate))
        silence = bytes([audio.ULAW_SILENCE]) * int(PAUSE_S * audio.SAMPLE_RATE)
        out[text] = _trim_trailing_quiet(ulaw) + silence
    return out


@pytest.fixture(scope="module")
def model() -> SmartTurn:
    return SmartTurn(threads=1)


# --------------------------------------------------------------------------- features


def test_mel_filterbank_is_whispers() -> None:
    ours = turn_model.mel_filterbank()
    theirs = FeatureExtractor.get_mel_filters(16000, 400, n_mels=80)
    assert ours.shape == theirs.shape == (80, 201)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-8)


@pytest.mark.parametrize("seconds", [0.5, 3.0, 8.0])
def test_features_match_faster_whisper(seconds: float, speech: dict[str, bytes]) -> None:
    """Our log-mel against faster-whisper's FeatureExtractor on the same 16 kHz audio:
    speech, noise, and the model's full padded and normalized window."""
    rng = np.random.default_rng(7)
    noise = (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
    talk = audio.ulaw_to_float(speech[PAIRS[0][0]], 16000)[: int(seconds * 16000)]
    extractor = FeatureExtractor(feature_size=80, sampling_rate=16000, chunk_length=8)
    for x in (noise, talk, turn_model.model_window(talk)):
        ours = turn_model.log_mel(x)
        theirs = extractor(x, padding=0)
        assert ours.shape == theirs.shape == (80, len(x) // 160)
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)
    features = turn_model.model_features(talk)
    assert features.shape == (1, 80, 800) and features.dtype == np.float32


def test_window_keeps_the_last_8_seconds_padded_at_the_start() -> None:
    short = np.linspace(-0.5, 0.5, 16000, dtype=np.float32)
    window = turn_model.model_window(short)
    assert window.shape == (128_000,)
    # Padding at the start: the zeros (all equal after normalizing) come first and the
    # audio ends the window.
    assert np.all(window[:112_000] == window[0])
    assert window[-1] > window[-2] > window[112_000]
    assert abs(float(window.mean())) < 1e-4 and abs(float(window.std()) - 1) < 1e-3
    long = np.random.default_rng(1).standard_normal(200_000).astype(np.float32)
    np.testing.assert_array_equal(
        turn_model.model_window(long), turn_model.model_window(long[-128_000:])
    )


# --------------------------------------------------------------------------- the model


def test_smart_turn_is_a_turn_model(model: SmartTurn) -> None:
    assert isinstance(model.name, str) and model.name == "smart-turn-v3.2"
    as_protocol: TurnModel = model
    assert as_protocol.predict is not None


def test_missing_model_says_run_make_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEALERLINE_MODEL_CACHE", str(tmp_path))
    with pytest.raises(ModelError, match="make setup"):
        SmartTurn()
    with pytest.raises(ValueError):
        SmartTurn(threads=0)
    with pytest.raises(ModelError, match="does not exist"):
        SmartTurn(tmp_path / "nope.onnx")


def test_another_onnx_model_is_refused() -> None:
    import faster_whisper

    silero = Path(faster_whisper.__file__).parent / "assets" / "silero_vad_v6.onnx"
    with pytest.raises(ModelError, match="not a Smart Turn v3 model"):
        SmartTurn(silero)


def test_silence_and_empty_audio_get_a_probability(model: SmartTurn) -> None:
    for clip in (b"", bytes([audio.ULAW_SILENCE]) * 8000):
        assert 0.0 <= model.predict(clip) <= 1.0


def test_complete_sentences_score_above_cut_off_ones(
    model: SmartTurn, speech: dict[str, bytes]
) -> None:
    scores = [(model.predict(speech[done]), model.predict(speech[cut])) for done, cut in PAIRS]
    for (done, cut), (p_done, p_cut) in zip(PAIRS, scores, strict=True):
        assert 0.0 <= p_cut < p_done <= 1.0, (done, p_done, cut, p_cut)
        assert p_done >= 0.5, (done, p_done)
    assert sum(p_cut < 0.5 for _, p_cut in scores) >= 2, scores
    separation = statistics.mean(d for d, _ in scores) - statistics.mean(c for _, c in scores)
    assert separation >= 0.3, scores


def test_feeding_8khz_as_16khz_breaks_the_model(model: SmartTurn, speech: dict[str, bytes]) -> None:
    """The resampling matters: the same audio handed over at its 8 kHz rate as if it were
    16 kHz loses most of the separation and calls the cut-off phrases complete."""

    def scores(to_float: object) -> list[tuple[float, float]]:
        assert callable(to_float)
        return [
            (model.predict_16k(to_float(speech[d])), model.predict_16k(to_float(speech[c])))
            for d, c in PAIRS
        ]

    right = scores(lambda u: audio.ulaw_to_float(u, 16000))
    wrong = scores(lambda u: audio.ulaw_to_float(u, 8000))
    assert right == [(model.predict(speech[d]), model.predict(speech[c])) for d, c in PAIRS]

    def separation(s: list[tuple[float, float]]) -> float:
        return statistics.mean(d for d, _ in s) - statistics.mean(c for _, c in s)

    def told_apart(s: list[tuple[float, float]]) -> int:
        return sum(d >= 0.5 > c for d, c in s)

    assert separation(wrong) < separation(right) / 2, (right, wrong)
    assert told_apart(wrong) < told_apart(right), (right, wrong)


def test_only_the_last_8_seconds_count(model: SmartTurn, speech: dict[str, bytes]) -> None:
    done = speech[PAIRS[0][0]]
    earlier = speech[PAIRS[1][1]] * 6  # > 8 s of other speech before it
    both = earlier + done
    assert len(both) > 8 * audio.SAMPLE_RATE
    assert model.predict(both) == model.predict(both[-8 * audio.SAMPLE_RATE :])


def test_predict_is_thread_safe(model: SmartTurn, speech: dict[str, bytes]) -> None:
    clips = [speech[t] for pair in PAIRS for t in pair]
    alone = [model.predict(c) for c in clips]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(model.predict, clips))
    assert together == alone


def test_two_threads_agree_with_one(model: SmartTurn, speech: dict[str, bytes]) -> None:
    clip = speech[PAIRS[0][0]]
    assert SmartTurn(threads=2).predict(clip) == pytest.approx(model.predict(clip), abs=1e-3)


class _CountingSession:
    """The real onnxruntime session, counting the runs in flight at once."""

    def __init__(self, session: object) -> None:
        self._session = session
        self._lock = threading.Lock()
        self.now = 0
        self.most = 0

    def run(self, *args: object) -> object:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            time.sleep(0.02)  # long enough for the other threads to arrive
            return self._session.run(*args)  # type: ignore[attr-defined]
        finally:
            with self._lock:
                self.now -= 1


@pytest.mark.parametrize("concurrency", [1, 2])
def test_concurrency_bounds_the_runs_at_once(speech: dict[str, bytes], concurrency: int) -> None:
    """Runs beyond ``concurrency`` wait for a slot (each run in flight holds its own
    working memory), and every answer is the same as alone."""
    model = SmartTurn(threads=1, concurrency=concurrency)
    clips = [speech[t] for pair in PAIRS for t in pair]
    alone = [model.predict(c) for c in clips]
    counting = _CountingSession(model._session)
    model._session = counting  # type: ignore[assignment]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(model.predict, clips))
    assert together == alone
    assert counting.most == concurrency
    with pytest.raises(ValueError):
        SmartTurn(concurrency=0)
