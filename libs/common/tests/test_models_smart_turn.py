"""Smart Turn v3.2 install (``make setup``) and lookup (run time, never downloads).

The install path is exercised on a wheel built here (served through a ``file://`` URL and
as a local path) with the pins pointed at it, so no test needs the network; the real,
pinned file is checked where ``make setup`` installed it.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dealerline_common import models
from dealerline_common.models import ModelError

MODEL_BYTES = b"not really onnx, but pinned bytes " * 1000


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A wheel holding MODEL_BYTES at the pinned member path, with every pin aimed at it."""
    wheel = tmp_path / "dl" / models.SMART_TURN_WHEEL
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pipecat/__init__.py", "")
        zf.writestr(models.SMART_TURN_WHEEL_MEMBER, MODEL_BYTES)
    data = wheel.read_bytes()
    monkeypatch.setattr(models, "SMART_TURN_WHEEL_SHA256", _sha(data))
    monkeypatch.setattr(models, "SMART_TURN_WHEEL_SIZE", len(data))
    monkeypatch.setattr(models, "SMART_TURN_SHA256", _sha(MODEL_BYTES))
    monkeypatch.setattr(models, "SMART_TURN_SIZE", len(MODEL_BYTES))
    monkeypatch.delenv(models.SMART_TURN_WHEEL_ENV, raising=False)
    return wheel


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.name.startswith("."))


def test_install_from_a_url_verifies_writes_and_stamps(fake_wheel: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    out = models.install_smart_turn(cache, source=fake_wheel.as_uri())
    assert out == cache / models.SMART_TURN_FILE
    assert out.read_bytes() == MODEL_BYTES
    assert (cache / "smart-turn-v3.2-cpu.sha256").read_text().strip() == _sha(MODEL_BYTES)
    assert out.stat().st_mode & 0o444 == 0o444, "readable by the service user"
    assert _leftovers(cache) == []
    assert models.smart_turn_path(cache) == out


def test_install_is_skipped_when_already_installed(fake_wheel: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    out = models.install_smart_turn(cache, source=str(fake_wheel))
    mtime = out.stat().st_mtime_ns
    # A source that does not exist proves nothing is fetched the second time.
    again = models.install_smart_turn(cache, source=str(tmp_path / "missing.whl"))
    assert again == out and out.stat().st_mtime_ns == mtime


def test_the_environment_names_a_mirror(
    fake_wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(models.SMART_TURN_WHEEL_ENV, str(fake_wheel))
    out = models.install_smart_turn(tmp_path / "cache")
    assert out.read_bytes() == MODEL_BYTES


def test_a_different_wheel_is_refused(
    fake_wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models, "SMART_TURN_WHEEL_SHA256", "0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(ModelError, match="not the pinned"):
        models.install_smart_turn(cache, source=str(fake_wheel))
    assert not (cache / models.SMART_TURN_FILE).exists()
    assert _leftovers(cache) == []


def test_a_wheel_whose_model_differs_is_refused(
    fake_wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models, "SMART_TURN_SHA256", "0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(ModelError, match="does not match the pinned sha256"):
        models.install_smart_turn(cache, source=str(fake_wheel))
    assert not (cache / models.SMART_TURN_FILE).exists()
    assert _leftovers(cache) == []


def test_an_unreachable_source_says_how_to_mirror(fake_wheel: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=models.SMART_TURN_WHEEL_ENV):
        models.install_smart_turn(tmp_path / "cache", source=str(tmp_path / "nope.whl"))


def test_lookup_never_downloads_and_says_run_make_setup(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="make setup"):
        models.smart_turn_path(tmp_path)


def test_lookup_rejects_a_tampered_file(fake_wheel: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    out = models.install_smart_turn(cache, source=str(fake_wheel))
    data = bytearray(out.read_bytes())
    data[100] ^= 0xFF  # same size, same stamp: only the full hash sees it
    out.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        models.smart_turn_path(cache)
    # The install's quick skip trusts size + stamp, so it is the lookup's full hash that
    # catches this; without the stamp the install puts the pinned bytes back.
    (cache / "smart-turn-v3.2-cpu.sha256").unlink()
    models.install_smart_turn(cache, source=str(fake_wheel))
    assert models.smart_turn_path(cache).read_bytes() == MODEL_BYTES


def test_the_command_line_rejects_unknown_arguments() -> None:
    assert models.main(["everything"]) == 2


def test_the_module_runs_on_the_standard_library_alone(tmp_path: Path) -> None:
    """The gateway image installs the model by running models.py as a lone file with a
    bare Python (no site-packages, no dealerline_common package around it)."""
    lone = tmp_path / "dealerline_models.py"
    lone.write_bytes(Path(models.__file__).read_bytes())
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(lone), "no-such-command"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "usage: python -m dealerline_common.models [smart-turn]" in result.stderr


def test_make_setup_installed_the_pinned_file() -> None:
    """The real model where ``make setup`` put it: the pinned bytes (full sha256)."""
    path = models.smart_turn_path()
    assert path.name == "smart-turn-v3.2-cpu.onnx"
    assert path.stat().st_size == models.SMART_TURN_SIZE == 8_679_182
    assert models.SMART_TURN_WHEEL_URL.endswith("/pipecat_ai-1.14.0-py3-none-any.whl")
