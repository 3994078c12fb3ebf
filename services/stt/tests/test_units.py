"""Pieces of the STT worker that need no server or model."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from dealerline_common.settings import SettingsError, load_settings
from dealerline_stt.engine import resolve_compute_type, summarise
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
