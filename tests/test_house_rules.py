"""The house rules, checked as `make test` runs them: import contracts (import-linter, with a
deliberately broken copy of the tree to show they bite), libs/common's tests free of the
simulator and the services, and no oversized module or function (tools/sizes.py)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import sizes  # noqa: E402

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
SERVICES = (
    "dealerline_gateway",
    "dealerline_stt",
    "dealerline_tts",
    "dealerline_agent",
    "dealerline_escalation",
    "dealerline_dashboard",
    "dealerline_aftercall",
)


def _lint_imports(pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_import_contracts_are_kept() -> None:
    result = _lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 kept, 0 broken" in result.stdout


def _copy_packages(dest: Path) -> None:
    for src in [*ROOT.glob("services/*/src/*"), *ROOT.glob("libs/*/src/*")]:
        if src.is_dir() and src.name.startswith("dealerline_"):
            shutil.copytree(src, dest / src.name, ignore=shutil.ignore_patterns("__pycache__"))


@pytest.mark.parametrize(
    ("module", "added", "contract"),
    [
        (
            "dealerline_gateway/__init__.py",
            "import dealerline_agent.settings",
            "Services never import each other",
        ),
        (
            "dealerline_common/__init__.py",
            "import dealerline_sim",
            "libs/common imports no service",
        ),
        (
            "dealerline_sim/__init__.py",
            "import dealerline_tts",
            "libs/sim (the simulator) imports no service",
        ),
        (
            "dealerline_cli/__init__.py",
            "import dealerline_sim",
            "libs/cli imports no service",
        ),
        (
            "dealerline_stt/settings.py",
            "from dealerline_stt import service as _service",
            "No import cycle",
        ),
    ],
)
def test_a_broken_rule_fails_the_lint(
    tmp_path: Path, module: str, added: str, contract: str
) -> None:
    """A copy of the tree with one forbidden import added: lint-imports fails and names it."""
    _copy_packages(tmp_path)
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{added}  # added by the test\n")
    result = _lint_imports(pythonpath=tmp_path)
    assert result.returncode != 0, result.stdout
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(line.startswith(contract) for line in broken), result.stdout


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_common_tests_import_neither_the_simulator_nor_a_service() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(bad)
        for path in (ROOT / "libs/common/tests").rglob("*.py")
        if (bad := _imported_roots(path) & {"dealerline_sim", *SERVICES})
    }
    assert offenders == {}


def test_the_simulator_tests_import_no_service() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(bad)
        for path in (ROOT / "libs/sim/tests").rglob("*.py")
        if (bad := _imported_roots(path) & set(SERVICES))
    }
    assert offenders == {}


def test_no_module_or_function_is_oversized() -> None:
    modules, functions = sizes.measure(ROOT)
    assert modules and functions  # the walk found the sources
    over = [f"{m.where}: {m.lines} lines" for m in modules if m.lines > sizes.MAX_MODULE_LINES]
    over += [f"{f.where}: {f.lines} lines" for f in functions if f.lines > sizes.MAX_FUNCTION_LINES]
    assert over == []


def test_the_size_check_sees_an_oversized_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(sizes.MAX_FUNCTION_LINES))
    src = tmp_path / "services/demo/src/dealerline_demo/big.py"
    src.parent.mkdir(parents=True)
    src.write_text(f"def big():\n{body}\n")
    _, functions = sizes.measure(tmp_path)
    assert functions[0].lines == sizes.MAX_FUNCTION_LINES + 1
    assert functions[0].where.endswith("big.py:1 big")
