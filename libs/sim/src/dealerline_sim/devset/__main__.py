"""``python -m dealerline_sim.devset build|list``: regenerate the development set into the
package's data folder (or ``--out``), or print a summary of it."""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

from . import DevCase, data_dir, load
from .build import Synth, build
from .cases import all_cases
from .verify import check, whisper_ear


def _build(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else data_dir()
    synth = Synth(Path(args.cache) if args.cache else None)
    started = time.monotonic()
    manifest = build(
        out,
        only=set(args.only) if args.only else None,
        synth=synth,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    size = sum((out / r["audio"]).stat().st_size for r in manifest["cases"])
    print(
        f"built {len(manifest['cases'])} cases into {out}: {size / 1e6:.2f} MB audio; "
        f"{synth.synthesized} chunks synthesized ({synth.seconds:.0f} s of Kokoro), "
        f"{synth.cached} from cache; {time.monotonic() - started:.0f} s in all"
    )
    return 0


def summary(cases: list[DevCase]) -> list[str]:
    """Counts per kind and per expects, audio size and length."""
    lines = []
    by_kind = collections.Counter(c.kind for c in cases)
    for kind, n in sorted(by_kind.items()):
        expects = collections.Counter(str(c.expects) for c in cases if c.kind == kind)
        detail = ", ".join(f"{e}={k}" for e, k in sorted(expects.items()))
        lines.append(f"{kind:13s} {n:3d}  ({detail})")
    size = sum(len(c.audio) for c in cases)
    seconds = sum(c.duration_ms for c in cases) / 1000.0
    pauses = [p for c in cases for p in c.pauses_ms]
    lines.append(f"{'total':13s} {len(cases):3d}  {size / 1e6:.2f} MB, {seconds:.0f} s of audio")
    if pauses:
        lines.append(f"pauses: {len(pauses)}, {min(pauses):.0f}-{max(pauses):.0f} ms")
    return lines


def _list(args: argparse.Namespace) -> int:
    cases = load(args.kind, root=Path(args.root) if args.root else None)
    if args.cases:
        for c in cases:
            print(
                f"{c.id:22s} {c.kind:12s} {c.expects or '-':8s} {c.voice:13s} x{c.speed:.2f} "
                f"start {c.speech_start_ms:5.0f} end {c.true_end_ms:5.0f} "
                f"pauses {','.join(f'{p:.0f}' for p in c.pauses_ms) or '-'}  {c.text}"
            )
    print("\n".join(summary(cases)))
    return 0


def _check(args: argparse.Namespace) -> int:
    specs = [s for s in all_cases() if s.kind != "pause" and (not args.only or s.id in args.only)]
    synth, hear, failed = Synth(Path(args.cache) if args.cache else None), whisper_ear(), 0
    for spec in specs:
        result = check(spec, synth, hear)
        if result.ok:
            continue
        failed += 1
        fix = (
            f"pin {result.better.voice!r} x{result.better.speed:.2f}"
            if result.better
            else "no voice passes"
        )
        print(f"{spec.id}: {spec.text!r} heard as {result.heard!r}: {fix}")
    print(f"{len(specs) - failed}/{len(specs)} short clips say their words")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dealerline_sim.devset")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="synthesize the set (Kokoro; cached per chunk)")
    b.add_argument("--out", help="folder to write (default: the package's data/devset)")
    b.add_argument("--only", nargs="+", metavar="ID", help="just these case ids")
    b.add_argument("--cache", help="chunk cache folder (default: the model cache)")
    b.set_defaults(run=_build)
    ls = sub.add_parser("list", help="summarize the set")
    ls.add_argument("--kind", choices=["pause", "short", "backchannel", "interruption"])
    ls.add_argument("--root", help="a set built with --out")
    ls.add_argument("--cases", action="store_true", help="one line per case")
    ls.set_defaults(run=_list)
    c = sub.add_parser("check", help="Whisper hears the short clips' words (clean audio)")
    c.add_argument("--only", nargs="+", metavar="ID", help="just these case ids")
    c.add_argument("--cache", help="chunk cache folder (default: the model cache)")
    c.set_defaults(run=_check)
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
