"""Build the fleet's images: ``python3 deploy/build_images.py --registry REG --tag TAG``.

The five CPU services share ``deploy/service.Dockerfile`` and differ only in the build
arguments below; the speech workers keep their own Dockerfiles (CUDA base, model wheels) and
are built as ``-cuda`` and ``-models`` variants beside the plain CPU image. ``--dry-run``
prints the ``docker build`` commands instead of running them. Run from anywhere; the build
context is the repository root. Standard library only.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_DOCKERFILE = "deploy/service.Dockerfile"

# folder under services/ → (settings env prefix, default HTTP port, builds the web UI)
SERVICES: dict[str, tuple[str, int, bool]] = {
    "gateway": ("GATEWAY_", 8080, False),
    "agent": ("AGENT_", 8084, False),
    "escalation": ("ESCALATION_", 8085, False),
    "dashboard-api": ("DASHBOARD_", 8086, True),
    "aftercall": ("AFTERCALL_", 8087, False),
}
# The speech workers: their own Dockerfile, one image per variant (tag suffix → build args).
SPEECH_WORKERS = ("stt", "tts")
SPEECH_VARIANTS: dict[str, dict[str, str]] = {
    "": {},
    "-cuda": {"VARIANT": "cuda"},
    "-models": {"EMBED_MODELS": "true"},
}


def build_args(service: str) -> dict[str, str]:
    prefix, port, web = SERVICES[service]
    return {
        "SERVICE": service,
        "ENV_PREFIX": prefix,
        "HTTP_PORT": str(port),
        "WEB_UI": "true" if web else "false",
    }


def commands(registry: str, tag: str, only: list[str]) -> list[list[str]]:
    out: list[list[str]] = []
    for service in only or [*SERVICES, *SPEECH_WORKERS]:
        if service in SERVICES:
            args = build_args(service)
            variants = {"": args}
            dockerfile = SHARED_DOCKERFILE
        elif service in SPEECH_WORKERS:
            variants = SPEECH_VARIANTS
            dockerfile = f"services/{service}/Dockerfile"
        else:
            raise SystemExit(
                f"unknown service {service!r}: {', '.join([*SERVICES, *SPEECH_WORKERS])}"
            )
        for suffix, args in variants.items():
            cmd = ["docker", "build", "-f", dockerfile]
            for name, value in args.items():
                cmd += ["--build-arg", f"{name}={value}"]
            out.append([*cmd, "-t", f"{registry}/{service}:{tag}{suffix}", "."])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--registry", default="dealerline")
    parser.add_argument("--tag", default="0.1.0")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument("services", nargs="*", help="folders under services/ (default: all)")
    opts = parser.parse_args(argv)
    for cmd in commands(opts.registry, opts.tag, opts.services):
        print(shlex.join(cmd), flush=True)
        if not opts.dry_run:
            subprocess.run(cmd, cwd=REPO, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
