"""Has the caller finished their turn? Smart Turn v3.2 on the audio of the utterance so far.

Smart Turn v3.2 (Daily/pipecat, BSD-2-Clause) is a Whisper-tiny encoder with a small
classifier head, exported as an 8.7 MB int8 ONNX file that ``make setup`` installs
(:func:`dealerline_common.models.smart_turn_path`; nothing is downloaded here). It reads
the prosody of the last 8 s of speech and answers P(the turn is complete).

Its input must match what it was trained on, or it silently mispredicts:

- 16 kHz mono float audio: the caller's 8 kHz mu-law is decoded and resampled (soxr HQ);
- exactly the last 8 s (128,000 samples), zero-padded at the *start* when shorter, so the
  end of the speech always sits at the end of the window;
- the padded window normalized to zero mean and unit variance (``do_normalize``);
- Whisper's log-mel features with ``chunk_length=8``: centred STFT (reflect padding,
  n_fft 400, hop 160, periodic Hann window), power spectrum, 80-bin Slaney mel filterbank
  (0-8 kHz, Slaney area normalization), ``log10`` of ``max(mel, 1e-10)``, the last frame
  dropped (800 frames), clamped to ``max - 8`` and scaled ``(x + 4) / 4``;
- one input ``input_features`` of shape (1, 80, 800); the output is already the sigmoid
  probability of "complete".

The features are computed with numpy here (the gateway does not depend on faster-whisper
or transformers); a test checks them against faster-whisper's ``FeatureExtractor``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from dealerline_common import audio
from dealerline_common.logs import get_logger
from dealerline_common.models import SMART_TURN_SAMPLE_RATE, ModelError, smart_turn_path

log = get_logger(__name__)

SAMPLE_RATE = SMART_TURN_SAMPLE_RATE  # 16 kHz: the only rate the model understands
WINDOW_S = 8
WINDOW_SAMPLES = WINDOW_S * SAMPLE_RATE  # 128,000
N_FFT = 400
HOP = 160
N_MELS = 80
N_FRAMES = WINDOW_SAMPLES // HOP  # 800
MEL_FLOOR = 1e-10
NORM_EPS = 1e-7

Float32Array = npt.NDArray[np.float32]
Float64Array = npt.NDArray[np.float64]


class TurnModel(Protocol):
    """Scores the audio of an utterance so far: the probability that the turn is over."""

    name: str

    def predict(self, ulaw_8k: bytes) -> float: ...


# --------------------------------------------------------------------------- features


def _hz_to_mel(hz: Float64Array) -> Float64Array:
    """Slaney mel scale: linear (200/3 Hz per mel) below 1 kHz, logarithmic above."""
    mel = hz * 3.0 / 200.0
    log_part = hz >= 1000.0
    mel[log_part] = 15.0 + np.log(hz[log_part] / 1000.0) * (27.0 / np.log(6.4))
    return mel


def _mel_to_hz(mel: Float64Array) -> Float64Array:
    hz = mel * 200.0 / 3.0
    log_part = mel >= 15.0
    hz[log_part] = 1000.0 * np.exp((mel[log_part] - 15.0) * (np.log(6.4) / 27.0))
    return hz


def mel_filterbank(
    n_mels: int = N_MELS, n_fft: int = N_FFT, rate: int = SAMPLE_RATE
) -> Float64Array:
    """Triangular Slaney mel filters over 0..rate/2, area-normalized: (n_mels, n_fft//2+1)."""
    bins = np.linspace(0.0, rate / 2.0, n_fft // 2 + 1)
    edges_mel = np.linspace(0.0, _hz_to_mel(np.array([rate / 2.0]))[0], n_mels + 2)
    edges = _mel_to_hz(edges_mel)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return np.asarray(weights, dtype=np.float64)


def _sparse_rows(
    weights: Float64Array,
) -> tuple[npt.NDArray[np.intp], Float64Array, npt.NDArray[np.intp]]:
    """A filterbank as (bin index, weight) runs, one run per filter, and each run's start."""
    cols = [np.flatnonzero(row) for row in weights]
    starts = np.cumsum([0] + [len(c) for c in cols[:-1]])
    index = np.concatenate(cols)
    rows = np.repeat(np.arange(len(cols)), [len(c) for c in cols])
    return index, weights[rows, index], np.asarray(starts, dtype=np.intp)


# 391 non-zero weights of 80 x 201: applied sparsely, without a BLAS call (a multithreaded
# GEMM on a busy 2-core box costs tens of ms; this is ~1 ms).
_MEL_INDEX, _MEL_WEIGHT, _MEL_START = _sparse_rows(mel_filterbank())
_WINDOW = np.hanning(N_FFT + 1)[:-1]  # periodic Hann, as torch.hann_window / Whisper


def log_mel(samples: npt.NDArray[np.floating]) -> Float32Array:
    """Whisper log-mel features of 16 kHz audio as given (no padding, no normalizing):
    (80, len // 160) frames, the STFT's last frame dropped as Whisper does."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size < N_FFT // 2 + 1:
        raise ValueError(f"need at least {N_FFT // 2 + 1} samples, got {x.size}")
    padded = np.pad(x, N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    power = np.abs(np.fft.rfft(frames * _WINDOW, axis=-1)) ** 2  # (frames, 201)
    weighted = power[:-1, _MEL_INDEX] * _MEL_WEIGHT  # (frames - 1, 391)
    mel = np.add.reduceat(weighted, _MEL_START, axis=1).T  # (80, frames - 1)
    logs = np.log10(np.maximum(mel, MEL_FLOOR))
    logs = np.maximum(logs, logs.max() - 8.0)
    return np.asarray((logs + 4.0) / 4.0, dtype=np.float32)


def model_window(samples: npt.NDArray[np.floating]) -> Float32Array:
    """The last 8 s of 16 kHz audio, zero-padded at the start, normalized to zero mean and
    unit variance (over the whole padded window, as the model was trained)."""
    x = np.asarray(samples, dtype=np.float32)[-WINDOW_SAMPLES:]
    if x.size < WINDOW_SAMPLES:
        x = np.concatenate([np.zeros(WINDOW_SAMPLES - x.size, dtype=np.float32), x])
    return np.asarray((x - x.mean()) / np.sqrt(x.var() + NORM_EPS), dtype=np.float32)


def model_features(samples_16k: npt.NDArray[np.floating]) -> Float32Array:
    """The model's input for 16 kHz audio: (1, 80, 800) float32."""
    return log_mel(model_window(samples_16k))[None, :, :]


# --------------------------------------------------------------------------- model


class SmartTurn:
    """Smart Turn v3.2 on CPU through onnxruntime.

    ``path`` defaults to the file ``make setup`` installed (a :class:`ModelError` says to
    run it when missing). ``threads`` is onnxruntime's intra-op thread count. ``predict``
    may be called from several threads at once (onnxruntime's ``run`` is thread-safe and
    the features are pure); each call costs one model run on ``threads`` cores. At most
    ``concurrency`` runs go at once (the others wait their turn): every run in flight
    holds its own working memory (~15 MB, kept by onnxruntime's arena once grown), so
    more runs at once than cores only costs memory. Loading includes one warm-up run.
    """

    name = "smart-turn-v3.2"

    def __init__(self, path: Path | None = None, threads: int = 1, concurrency: int = 1) -> None:
        if threads < 1 or concurrency < 1:
            raise ValueError("threads and concurrency must be at least 1")
        self.path = Path(path) if path is not None else smart_turn_path()
        if not self.path.is_file():
            raise ModelError(f"turn model {self.path} does not exist")
        self.threads = threads
        self._slots = threading.BoundedSemaphore(concurrency)
        started = time.perf_counter()
        options = ort.SessionOptions()
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle pool threads sleep instead of spinning: the gateway shares its cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input = self._check_io()
        # One run at load: the first call on a live pause should not pay for allocation.
        self._session.run(None, {self._input: model_features(np.zeros(HOP, np.float32))})
        log.debug(
            "turn_model_loaded",
            model=self.name,
            path=str(self.path),
            threads=threads,
            load_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    def _check_io(self) -> str:
        inputs = self._session.get_inputs()
        shapes = [(i.name, list(i.shape)) for i in inputs]
        if len(inputs) != 1 or len(shapes[0][1]) != 3 or shapes[0][1][1:] != [N_MELS, N_FRAMES]:
            raise ModelError(
                f"{self.path} is not a Smart Turn v3 model: inputs {shapes}, expected one "
                f"[batch, {N_MELS}, {N_FRAMES}]"
            )
        return str(inputs[0].name)

    def predict(self, ulaw_8k: bytes) -> float:
        """P(turn complete) for the caller's 8 kHz mu-law audio of the utterance so far."""
        tail = ulaw_8k[-WINDOW_S * audio.SAMPLE_RATE :]
        return self.predict_16k(audio.ulaw_to_float(tail, SAMPLE_RATE))

    def predict_16k(self, samples: npt.NDArray[np.floating]) -> float:
        """P(turn complete) for 16 kHz float audio (any other rate mispredicts)."""
        started = time.perf_counter()
        features = model_features(samples)
        featured = time.perf_counter()
        with self._slots:
            (out, *_) = self._session.run(None, {self._input: features})
        prob = float(np.clip(np.asarray(out, dtype=np.float64).reshape(-1)[0], 0.0, 1.0))
        done = time.perf_counter()
        log.debug(
            "turn_model_predict",
            model=self.name,
            audio_ms=round(len(samples) * 1000 / SAMPLE_RATE),
            features_ms=round((featured - started) * 1000, 1),
            infer_ms=round((done - featured) * 1000, 1),
            prob=round(prob, 3),
        )
        return prob
