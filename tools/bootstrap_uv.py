"""Fetch the pinned uv binary into .tools/uv, with nothing but the standard library.

`make setup` runs this with whatever `python3` the machine has (PYTHON=...). It never installs
anything into that Python: no pip (a stock Debian 12 / Ubuntu 24.04 python3 refuses
`pip install` into the system, PEP 668, or has no pip at all), no sudo. It downloads the uv
wheel for this platform from PyPI, checks its sha256 against the pin below, and extracts the
`uv` executable out of the wheel (a zip) into the target path.

    python3 tools/bootstrap_uv.py .tools/uv

UV_WHEEL_URL: the same wheel on a mirror (the sha256 pin still applies). To bump uv, copy the
new version's file names and sha256 from https://pypi.org/pypi/uv/json ("urls").
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

VERSION = "0.13.9"
_FILES = "https://files.pythonhosted.org/packages"

# (system, machine, libc) -> (wheel URL on PyPI, sha256 of the wheel)
WHEELS: dict[tuple[str, str, str], tuple[str, str]] = {
    ("Linux", "x86_64", "glibc"): (
        f"{_FILES}/3d/aa/26d64642d808de4a652579ef950d7cd2d37f080a8babf9c67c6b75fc4c3f/"
        f"uv-{VERSION}-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19",
    ),
    ("Linux", "x86_64", "musl"): (
        f"{_FILES}/fe/fe/794884de0efd3ac77a427cab21aa72c0483e100c55a42cd5cbb02c141b84/"
        f"uv-{VERSION}-py3-none-musllinux_1_1_x86_64.whl",
        "2c45530751517d6c3bbc69a19473f6effe47cce047bede01ffd8af7ea7b36b25",
    ),
    # One static aarch64 binary serves glibc and musl alike (the wheel carries both tags).
    ("Linux", "aarch64", "glibc"): (
        f"{_FILES}/57/15/94b6cd62ac3ff6550288328e8035288875197cbc183f51554b266a69877b/"
        f"uv-{VERSION}-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64.musllinux_1_1_aarch64.whl",
        "5435c5ce14a56431208ca0996416d310f1598e8c2c8ba707688985a16bb82dbe",
    ),
    ("Darwin", "x86_64", ""): (
        f"{_FILES}/1e/db/08e9ef4879bd667e6d7b4705e594e5bd3e4585f10fc63cb16b9fa2fac63e/"
        f"uv-{VERSION}-py3-none-macosx_10_12_x86_64.whl",
        "c16ed11e013557536b3e60065f1b912f6407bd6518e041b961e23ef9e6b4fbf5",
    ),
    ("Darwin", "arm64", ""): (
        f"{_FILES}/f3/a7/a8d7b074798c7fb3b26b37584b8fe2e29df2ccdc24ce7902caab2a53edbf/"
        f"uv-{VERSION}-py3-none-macosx_11_0_arm64.whl",
        "66c512266d633bef48384a1f53003f41f2a8e7b36fe6e7fbfd3e0fd52d96fa63",
    ),
}
WHEELS["Linux", "aarch64", "musl"] = WHEELS["Linux", "aarch64", "glibc"]
WHEELS["Linux", "arm64", "glibc"] = WHEELS["Linux", "aarch64", "glibc"]
WHEELS["Darwin", "aarch64", ""] = WHEELS["Darwin", "arm64", ""]


class BootstrapError(Exception):
    """Why uv could not be fetched, in words for the person running make."""


def platform_key() -> tuple[str, str, str]:
    system, machine = platform.system(), platform.machine()
    if system != "Linux":
        return system, machine, ""
    libc, _ = platform.libc_ver()
    return system, machine, "glibc" if libc == "glibc" else "musl"


def wheel_for(key: tuple[str, str, str]) -> tuple[str, str]:
    try:
        return WHEELS[key]
    except KeyError:
        known = ", ".join(sorted({"/".join(filter(None, k)) for k in WHEELS}))
        raise BootstrapError(
            f"no pinned uv {VERSION} wheel for {'/'.join(filter(None, key))} (pinned: {known}); "
            "install uv yourself (https://docs.astral.sh/uv/) and run make with UV=$(command -v uv)"
        ) from None


def installed_version(path: Path) -> str | None:
    """`uv --version` of the binary at path ("uv 0.13.9 (...)" -> "0.13.9"), or None."""
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    parts = out.split()
    return parts[1] if len(parts) > 1 and parts[0] == "uv" else None


def download(url: str, dest: Path, *, out=sys.stderr) -> None:
    """Stream url into dest, printing progress (a line per 10 %) on out."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response, dest.open("wb") as sink:
            total = int(response.headers.get("Content-Length") or 0)
            done, shown = 0, -1
            while chunk := response.read(1 << 16):
                sink.write(chunk)
                done += len(chunk)
                if total and (tenth := done * 10 // total) != shown:
                    shown = tenth
                    print(f"  {done / 1e6:5.1f} / {total / 1e6:.1f} MB", file=out, flush=True)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BootstrapError(
            f"could not download {url}: {reason}. uv is fetched from PyPI the first time "
            "(is this machine offline or behind a proxy? HTTPS_PROXY is honoured; UV_WHEEL_URL "
            "may point at a mirror of the same wheel; or install uv yourself and run make with "
            "UV=$(command -v uv))"
        ) from exc


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def extract_uv(wheel: Path, target: Path) -> None:
    """Copy the wheel's `<name>.data/scripts/uv` to target, executable, atomically."""
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if n.endswith(".data/scripts/uv")]
        if len(names) != 1:
            raise BootstrapError(f"{wheel.name} holds no single .data/scripts/uv: {names}")
        partial = target.with_name(target.name + ".partial")
        with archive.open(names[0]) as source, partial.open("wb") as sink:
            while block := source.read(1 << 20):
                sink.write(block)
    partial.chmod(0o755)
    os.replace(partial, target)


def bootstrap(target: Path, *, url: str | None = None, out=sys.stderr) -> None:
    if installed_version(target) == VERSION:
        target.touch()  # newer than this script: make has nothing left to do
        return
    wheel_url, expected = wheel_for(platform_key())
    url = url or wheel_url
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"fetching uv {VERSION} from {url}", file=out, flush=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        wheel = Path(scratch) / url.rsplit("/", 1)[-1]
        download(url, wheel, out=out)
        actual = sha256_of(wheel)
        if actual != expected:
            raise BootstrapError(
                f"{wheel.name}: sha256 {actual} is not the pinned {expected}; not installed"
            )
        extract_uv(wheel, target)
    version = installed_version(target)
    if version != VERSION:
        raise BootstrapError(f"{target} --version says {version!r}, expected uv {VERSION}")
    print(f"uv {VERSION} installed at {target} (sha256 of the wheel checked)", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", type=Path, help="where the uv binary goes (e.g. .tools/uv)")
    args = parser.parse_args(argv)
    try:
        bootstrap(args.target, url=os.environ.get("UV_WHEEL_URL") or None)
    except BootstrapError as exc:
        print(f"bootstrap_uv: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
