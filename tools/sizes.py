"""House rule: no source module over 600 lines and no function over 60 lines.

Checks every Python file under services/*/src and libs/*/src (Alembic migrations aside),
prints the five largest modules and functions so the margin stays visible, and exits 1
naming every offender. Run by `make lint` and by tests/test_house_rules.py.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Sized:
    where: str
    lines: int


def source_files(root: Path = ROOT) -> list[Path]:
    files = [*root.glob("services/*/src/**/*.py"), *root.glob("libs/*/src/**/*.py")]
    return sorted(f for f in files if "migrations" not in f.parts)


def measure(root: Path = ROOT) -> tuple[list[Sized], list[Sized]]:
    modules: list[Sized] = []
    functions: list[Sized] = []
    for path in source_files(root):
        text = path.read_text()
        rel = path.relative_to(root).as_posix()
        modules.append(Sized(rel, len(text.splitlines())))
        for node in ast.walk(ast.parse(text, filename=rel)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                end = node.end_lineno or node.lineno
                functions.append(Sized(f"{rel}:{node.lineno} {node.name}", end - start + 1))
    modules.sort(key=lambda s: -s.lines)
    functions.sort(key=lambda s: -s.lines)
    return modules, functions


def main() -> int:
    modules, functions = measure()
    print(f"largest modules (limit {MAX_MODULE_LINES} lines):")
    for m in modules[:5]:
        print(f"  {m.lines:5d}  {m.where}")
    print(f"largest functions (limit {MAX_FUNCTION_LINES} lines):")
    for f in functions[:5]:
        print(f"  {f.lines:5d}  {f.where}")
    over = [m for m in modules if m.lines > MAX_MODULE_LINES]
    over += [f for f in functions if f.lines > MAX_FUNCTION_LINES]
    for o in over:
        print(f"too large: {o.where} has {o.lines} lines", file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
