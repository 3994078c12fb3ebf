"""`make setup` bootstraps uv with a Python that refuses `pip install` into the system.

A stock Debian 12 / Ubuntu 24.04 `python3` is "externally managed" (PEP 668: an
EXTERNALLY-MANAGED file in its stdlib folder), so `python3 -m pip install uv` fails. The test
builds such a Python out of the interpreter running it (its own prefix: a copy of the binary,
the real stdlib linked in, pip, and the marker), shows that pip refuses, then runs the
Makefile's uv target with it as `make setup` does and runs the uv it produced. That downloads
the pinned uv wheel from PyPI once. The bootstraps' refusals (unreachable index, wrong hash)
are checked against a local HTTP server.
"""

from __future__ import annotations

import http.server
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"


def _load(name: str):
    """A module of tools/ (bootstrap_node imports bootstrap_uv, beside it, as its script does)."""
    if str(TOOLS) not in sys.path:
        sys.path.insert(0, str(TOOLS))
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without the venv, uv's or pip's settings (make must not see ours)."""
    drop = ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH", "UV", "UV_WHEEL_URL", "MAKEFLAGS")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PIP_")}
    return {**env, **extra}


def _pip_wheel() -> Path:
    stdlib = Path(sysconfig.get_paths(vars={"installed_base": sys.base_prefix})["stdlib"])
    for folder in (stdlib / "ensurepip" / "_bundled", Path("/usr/share/python-wheels")):
        wheels = sorted(folder.glob("pip-*.whl"))
        if wheels:
            return wheels[-1]
    pytest.skip("no pip wheel (ensurepip's or Debian's python-pip-whl) to build the test Python")


@pytest.fixture(scope="module")
def refusing_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CPython with its own prefix, pip installed, and an EXTERNALLY-MANAGED marker."""
    prefix = tmp_path_factory.mktemp("system-python")
    version = sysconfig.get_config_var("VERSION")  # "3.11"
    base = Path(sys._base_executable).resolve()  # the interpreter behind this venv
    real_stdlib = Path(os.__file__).resolve().parent
    (prefix / "bin").mkdir()
    python = prefix / "bin" / "python3"
    shutil.copy2(base, python)  # a copy, not a link: it finds its prefix from where it lies
    for lib in (Path(sys.base_prefix) / "lib").glob("libpython*.so*"):
        (prefix / "lib").mkdir(exist_ok=True)
        (prefix / "lib" / lib.name).symlink_to(lib)
    stdlib = prefix / "lib" / f"python{version}"
    stdlib.mkdir(parents=True)
    skip = {"site-packages", "dist-packages", "EXTERNALLY-MANAGED", "__pycache__"}
    for entry in real_stdlib.iterdir():
        if entry.name not in skip:
            (stdlib / entry.name).symlink_to(entry)
    with zipfile.ZipFile(_pip_wheel()) as wheel:
        wheel.extractall(stdlib / "site-packages")
    (stdlib / "EXTERNALLY-MANAGED").write_text(
        "[externally-managed]\nError=This Python is managed by the system (test of make setup)\n"
    )
    where = subprocess.run(
        [python, "-c", "import sys, sysconfig; print(sys.prefix, sysconfig.get_path('stdlib'))"],
        capture_output=True,
        text=True,
        check=True,
        env=_clean_env(),
    ).stdout.split()
    assert where == [str(prefix), str(stdlib)], where
    return python


def test_the_python_refuses_pip_install(refusing_python: Path) -> None:
    refused = subprocess.run(
        [refusing_python, "-m", "pip", "install", "uv"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=120,
    )
    assert refused.returncode != 0
    assert "externally-managed-environment" in refused.stdout + refused.stderr
    no_uv = subprocess.run([refusing_python, "-m", "uv", "--version"], capture_output=True)
    assert no_uv.returncode != 0  # and uv is not there to begin with


def test_make_bootstraps_uv_with_that_python(refusing_python: Path, tmp_path: Path) -> None:
    """The Makefile's uv step, as `make setup` runs it first, in a copy of the repository's
    Makefile and tools (so nothing of this checkout's .tools is used or changed)."""
    (tmp_path / "tools").mkdir()
    shutil.copy2(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copy2(TOOLS / "bootstrap_uv.py", tmp_path / "tools" / "bootstrap_uv.py")
    make = ["make", "--no-print-directory", "-C", str(tmp_path), ".uv-installed"]
    first = subprocess.run(
        [*make, f"PYTHON={refusing_python}"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=600,
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"{refusing_python} tools/bootstrap_uv.py .tools/uv" in first.stdout
    assert "sha256 of the wheel checked" in first.stderr
    uv = tmp_path / ".tools" / "uv"
    version = subprocess.run([uv, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.split()[:2] == ["uv", _load("bootstrap_uv").VERSION]

    again = subprocess.run(
        [*make, f"PYTHON={refusing_python}"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=120,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "bootstrap_uv" not in again.stdout + again.stderr  # idempotent: nothing fetched


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, folder) of a local HTTP server serving that folder."""
    root = tmp_path / "served"
    root.mkdir()
    handler = lambda *a, **kw: _Files(*a, directory=str(root), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _bootstrap(script: str, target: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, TOOLS / script, target],
        capture_output=True,
        text=True,
        env=_clean_env(**env),
        timeout=120,
    )


def test_uv_bootstrap_offline_says_so(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/uv.whl"
    result = _bootstrap("bootstrap_uv.py", tmp_path / "uv", UV_WHEEL_URL=url)
    assert result.returncode == 1
    assert f"could not download {url}" in result.stderr
    assert "offline" in result.stderr and "UV=$(command -v uv)" in result.stderr
    assert not (tmp_path / "uv").exists()


def test_uv_bootstrap_refuses_a_wheel_with_another_hash(
    file_server: tuple[str, Path], tmp_path: Path
) -> None:
    base, served = file_server
    with zipfile.ZipFile(served / "uv.whl", "w") as wheel:  # a wheel with a uv, not PyPI's
        wheel.writestr("uv-0.0.0.data/scripts/uv", "#!/bin/sh\necho uv 0.0.0\n")
    result = _bootstrap("bootstrap_uv.py", tmp_path / "uv", UV_WHEEL_URL=f"{base}/uv.whl")
    assert result.returncode == 1
    assert "is not the pinned" in result.stderr and "not installed" in result.stderr
    assert not (tmp_path / "uv").exists()


@pytest.mark.skipif(sys.platform != "linux", reason="Node is pinned for Linux only")
def test_node_bootstrap_refuses_a_tarball_with_another_integrity(
    file_server: tuple[str, Path], tmp_path: Path
) -> None:
    base, served = file_server
    node = _load("bootstrap_node")
    package, _ = node.NODE_PACKAGES[os.uname().machine]
    tarball = served / package / "-" / f"{package}-{node.NODE_VERSION}.tgz"
    tarball.parent.mkdir(parents=True)
    tarball.write_bytes(b"not the pinned node")
    result = _bootstrap("bootstrap_node.py", tmp_path / "node", NPM_CONFIG_REGISTRY=base)
    assert result.returncode == 1
    assert f"fetching {package}@{node.NODE_VERSION} from {base}/" in result.stderr
    assert "is not the pinned" in result.stderr
    assert not (tmp_path / "node").exists()


def test_one_uv_version_for_make_and_the_images() -> None:
    """The images install the same uv as `make setup` (their UV_VERSION build argument)."""
    pinned = _load("bootstrap_uv").VERSION
    dockerfiles = [ROOT / "deploy" / "service.Dockerfile", *ROOT.glob("services/*/Dockerfile")]
    found = {
        path.relative_to(ROOT).as_posix(): line.split("=", 1)[1].strip()
        for path in dockerfiles
        for line in path.read_text().splitlines()
        if line.startswith("ARG UV_VERSION=")
    }
    assert len(found) == 3, found  # deploy/service.Dockerfile, services/stt, services/tts
    assert set(found.values()) == {pinned}, found
