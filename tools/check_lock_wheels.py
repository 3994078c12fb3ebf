"""Check that uv.lock installs from wheels on each supported Python and Linux platform.

For every (Python, platform) pair: the packages `uv export` pins for the whole workspace (every
member, the dev group) whose markers hold there, and for each one a wheel in uv.lock whose tags
that CPython accepts (packaging.tags, the same rules pip and uv apply). A package with no such
wheel would be built from source there: listed, and the check fails unless the package is a
known pure-Python source-only one (SOURCE_ONLY, built today on every Python alike).

    uv run python tools/check_lock_wheels.py            # 3.11, 3.12, 3.13 x x86_64, aarch64

This needs no other Python than the one running it: it reads the lock, it installs nothing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parent.parent
PYTHONS = ("3.11", "3.12", "3.13")
MACHINES = ("x86_64", "aarch64")
GLIBC_MINOR = 28  # manylinux_2_28: Debian 12 (2.36), Ubuntu 24.04 (2.39), RHEL 8 (2.28)
# Published as source only, pure Python (no compiler needed), on every Python the same.
SOURCE_ONLY = {"nkeys"}


def platforms(machine: str) -> list[str]:
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(GLIBC_MINOR, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags += [f"{name}_{machine}" for minor, name in legacy.items() if minor <= GLIBC_MINOR]
    return [*tags, f"linux_{machine}"]


def supported_tags(python: str, machine: str) -> set[Tag]:
    version = tuple(int(part) for part in python.split("."))
    plats = platforms(machine)
    return set(cpython_tags(version, platforms=plats)) | set(
        compatible_tags(version, f"cp{version[0]}{version[1]}", plats)
    )


def environment(python: str, machine: str) -> dict[str, str]:
    return {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": machine,
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": "",
    }


def exported(uv: str) -> list[Requirement]:
    """Every pinned package of the workspace (all members, dev group), markers kept."""
    text = subprocess.run(
        [
            uv,
            "export",
            "--frozen",
            "--all-packages",
            "--no-hashes",
            "--no-emit-workspace",
            "--no-header",
            "--no-annotate",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [Requirement(line) for line in text.splitlines() if line and line[0].isalnum()]


def lock_wheels() -> dict[tuple[str, str], list[str]]:
    """(name, version) -> the wheel file names uv.lock records."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {
        (canonicalize_name(pkg["name"]), pkg.get("version", "")): [
            wheel["url"].rsplit("/", 1)[-1] for wheel in pkg.get("wheels", [])
        ]
        for pkg in lock["package"]
    }


def check(python: str, machine: str, pins: list[Requirement], wheels: dict) -> list[str]:
    """The packages (name==version) with no wheel for this Python and machine."""
    tags, env = supported_tags(python, machine), environment(python, machine)
    missing = []
    for req in pins:
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        version = next(iter(req.specifier)).version
        files = wheels.get((canonicalize_name(req.name), version), [])
        if not any(parse_wheel_filename(name)[3] & tags for name in files):
            missing.append(f"{req.name}=={version}")
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uv", default=str(ROOT / ".tools" / "uv"), help="the uv binary")
    parser.add_argument("--python", nargs="+", default=PYTHONS)
    parser.add_argument("--machine", nargs="+", default=MACHINES)
    args = parser.parse_args(argv)
    pins, wheels, failed = exported(args.uv), lock_wheels(), False
    for python in args.python:
        for machine in args.machine:
            missing = check(python, machine, pins, wheels)
            unexpected = [m for m in missing if m.split("==")[0] not in SOURCE_ONLY]
            failed |= bool(unexpected)
            applies = sum(
                1
                for r in pins
                if r.marker is None or r.marker.evaluate(environment(python, machine))
            )
            print(
                f"Python {python} manylinux_2_{GLIBC_MINOR}_{machine}: {applies} packages, "
                f"{applies - len(missing)} with a wheel; source only: "
                f"{', '.join(missing) or 'none'}"
                + (f"  <- NO WHEEL: {', '.join(unexpected)}" if unexpected else "")
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
