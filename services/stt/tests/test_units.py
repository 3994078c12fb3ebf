"""Pieces of the STT worker that need no server or model."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from dealerline_common.settings import SettingsError, load_settings
from dealerline_stt.engine import (
    cut_window,
    encoder_frames,
    resolve_compute_type,
    summarise,
    window_frames,
)
from dealerline_stt.settings import DEFAULT_PROMPT, SttSettings


@dataclass
class Segment:
    text: str
    avg_logprob: float
    no_speech_prob: float


def test_summarise_joins_segments_and_bounds_confidence() -> None:
    result = summarise(
        [Segment(" Hello there.", math.log(0.9), 0.1), Segment(" Oil change? ", 0.5, 0.3)], "en"
    )
    assert result.text == "Hello there. Oil change?"
    assert result.confidence == pytest.approx((0.9 + 1.0) / 2)  # exp(0.5) > 1 is clipped
    assert result.no_speech_prob == pytest.approx(0.3)


def test_summarise_without_segments_is_empty() -> None:
    result = summarise([], "en")
    assert result.text == ""
    assert result.confidence is None


def test_compute_type_follows_the_device() -> None:
    assert resolve_compute_type("default", "cpu") == "int8"
    assert resolve_compute_type("default", "cuda") == "float16"
    assert resolve_compute_type("int8_float16", "cuda") == "int8_float16"


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STT_BEAM_SIZE", "5")
    monkeypatch.setenv("STT_DEVICE", "cuda")
    monkeypatch.setenv("STT_CONCURRENCY", "2")
    settings = load_settings(SttSettings)
    assert (settings.beam_size, settings.device, settings.concurrency) == (5, "cuda", 2)
    assert settings.http_port == 8082
    assert settings.initial_prompt == DEFAULT_PROMPT
    assert "oil change" in DEFAULT_PROMPT
    assert "VIN" in DEFAULT_PROMPT

    monkeypatch.setenv("STT_INITIAL_PROMPT", "none")
    assert load_settings(SttSettings).initial_prompt is None


def test_a_bad_setting_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STT_DEVICE", "tpu")
    with pytest.raises(SettingsError, match="STT_DEVICE"):
        load_settings(SttSettings)


def test_the_encoder_window_covers_the_audio_plus_a_margin() -> None:
    assert encoder_frames(300, 1000) == 1000  # a 3 s turn: the 10 s window
    assert encoder_frames(950, 1000) == 1050  # 9.5 s: its length and 1 s more
    assert encoder_frames(1201, 1000) == 1302  # always even (the conv halves it)
    assert encoder_frames(2950, 1000) == 3000  # never past Whisper's 30 s
    assert encoder_frames(300, 3000) == 3000  # the full window stays full


def test_cut_window_keeps_the_audio_and_drops_only_padding() -> None:
    rng = np.random.default_rng(1)
    features = np.zeros((80, 3000), dtype=np.float32)
    features[:, :250] = rng.standard_normal((80, 250))
    features[:, 100] = 0.0  # a zero column inside the audio is not the end of it
    cut = cut_window(features, 1000)
    assert cut.shape == (80, 1000)
    np.testing.assert_array_equal(cut, features[:, :1000])
    assert cut_window(features[None], 500).shape == (1, 80, 500)  # batched
    assert cut_window(np.zeros((80, 3000), dtype=np.float32), 1000).shape == (80, 1000)
    assert cut_window(features, 3000) is features


def test_window_setting() -> None:
    assert window_frames(10.0) == 1000
    assert window_frames(0.0) == 3000
    assert window_frames(30.0) == 3000
    assert SttSettings(encoder_window_s=0).encoder_window_s == 0
    with pytest.raises(ValueError, match="at least 10 s"):
        SttSettings(encoder_window_s=5)
