"""``dealerline voices``: files are installed only when their sha256 is the pinned one,
an unreachable download says so and how to copy the files in by hand, and the settings
printed at the end point at the verified files.

The refusals run the installed ``dealerline`` command as a process, as an operator does; the
successful install runs in-process with the pins replaced by those of small files made here
(the real files are hundreds of MB, and this machine has no internet).
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dealerline_cli import voices
from dealerline_cli.main import app

DEALERLINE = Path(sys.executable).parent / "dealerline"


def run_cli(
    *args: str, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEALERLINE_VOICES")}
    env |= env_extra or {}
    return subprocess.run(
        [str(DEALERLINE), "voices", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_from_dir_refuses_a_file_whose_hash_is_wrong(tmp_path: Path) -> None:
    hand = tmp_path / "usb"
    hand.mkdir()
    (hand / "voices-v1.0.bin").write_bytes(b"not the voice pack" * 1000)
    dest = tmp_path / "models"
    done = run_cli("--dir", str(dest), "--from-dir", str(hand))
    assert done.returncode == 2, done.stderr
    assert "is not the published voices-v1.0.bin" in done.stderr
    assert voices.VOICES.sha256 in done.stderr  # what was expected is named
    assert "refused" in done.stderr
    assert not (dest / "voices-v1.0.bin").exists()
    assert not [p for p in dest.iterdir() if p.name.endswith(".part")]  # no debris


def test_from_dir_names_a_missing_file(tmp_path: Path) -> None:
    hand = tmp_path / "usb"
    hand.mkdir()
    done = run_cli("--dir", str(tmp_path / "models"), "--from-dir", str(hand))
    assert done.returncode == 2
    assert f"{hand / 'voices-v1.0.bin'} not found" in done.stderr


def test_unreachable_url_says_it_cannot_and_how_to_copy_by_hand(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/kokoro/"
    dest = tmp_path / "models"
    done = run_cli("--dir", str(dest), env_extra={"DEALERLINE_VOICES_URL": url})
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"cannot download {url}voices-v1.0.bin" in done.stderr
    assert "--from-dir" in done.stderr  # the way out without internet
    assert "TTS_VOICES_PATH" not in done.stdout  # no settings for files that are not there
    assert not (dest / "voices-v1.0.bin").exists()


def _pack(path: Path, names: list[str]) -> voices.PinnedFile:
    """A real npz voice pack with these voices, and its pin."""
    with path.open("wb") as f:
        np.savez(f, **{n: np.zeros((4, 1, 256), dtype=np.float32) for n in names})
    data = path.read_bytes()
    return voices.PinnedFile(path.name, len(data), hashlib.sha256(data).hexdigest())


def _pinned(monkeypatch: pytest.MonkeyPatch, hand: Path) -> tuple[Path, Path]:
    """Small files in ``hand`` under the release names, with the pins replaced by theirs."""
    hand.mkdir()
    pack = _pack(hand / "voices-v1.0.bin", ["af_heart", "am_adam", "bf_emma", "jf_alpha"])
    model = hand / "kokoro-v1.0.onnx"
    model.write_bytes(b"an onnx model" * 100)
    data = model.read_bytes()
    model_pin = voices.PinnedFile(model.name, len(data), hashlib.sha256(data).hexdigest())
    monkeypatch.setattr(voices, "VOICES", pack)
    monkeypatch.setattr(voices, "MODEL_FULL", model_pin)
    monkeypatch.setitem(voices.MODELS, voices.Model.full, model_pin)
    return hand / pack.name, model


def test_from_dir_installs_verified_files_and_prints_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pack, model = _pinned(monkeypatch, tmp_path / "usb")
    dest = tmp_path / "models"
    args = ["voices", "--dir", str(dest), "--model", "full", "--from-dir", str(pack.parent)]
    result = CliRunner().invoke(app, [*args, "--voice", "bf_emma"])
    assert result.exit_code == 0, result.output
    assert (dest / pack.name).read_bytes() == pack.read_bytes()
    assert (dest / model.name).read_bytes() == model.read_bytes()
    assert f"TTS_MODEL_PATH={(dest / model.name).resolve()}" in result.output
    assert f"TTS_VOICES_PATH={(dest / pack.name).resolve()}" in result.output
    assert "TTS_VOICE=bf_emma" in result.output

    # Again: the files already there are checked and kept, not copied anew.
    pack.unlink()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "voices-v1.0.bin: already there" in again.output
    assert "TTS_VOICE=af_heart" in again.output  # the default English voice


def test_a_voice_not_in_the_pack_is_refused_with_the_english_ones_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pack, _model = _pinned(monkeypatch, tmp_path / "usb")
    args = ["voices", "--dir", str(tmp_path / "m"), "--model", "full", "--from-dir"]
    result = CliRunner().invoke(app, [*args, str(pack.parent), "--voice", "af_nobody"])
    assert result.exit_code == 2
    assert "'af_nobody' is not in voices-v1.0.bin" in result.output
    assert "English voices: af_heart, am_adam, bf_emma" in result.output


def test_a_corrupted_file_in_place_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pack, _model = _pinned(monkeypatch, tmp_path / "usb")
    dest = tmp_path / "models"
    dest.mkdir()
    (dest / pack.name).write_bytes(b"truncated")
    args = ["voices", "--dir", str(dest), "--model", "full", "--from-dir", str(pack.parent)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (dest / pack.name).read_bytes() == pack.read_bytes()
