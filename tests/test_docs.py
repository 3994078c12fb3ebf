"""The repository explains itself: every path the docs name exists, the behaviour index
covers what a newcomer looks for, and no docstring or README points outside the repository
(the original design document, a shared folder) instead of describing the behaviour."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# `a/b.py`, `a/b/`, `a/b.py:Name` — a path-looking span in backticks.
_PATH = re.compile(
    r"`((?:services|libs|deploy|tests|tools|docs)/[A-Za-z0-9_./{},*-]+?)(?::[A-Za-z_.]+)?`"
)
# What the behaviour index must answer (the words a newcomer searches for).
BEHAVIOURS = (
    "end of turn",
    "is the answer complete",
    "speculative transcription",
    "barge-in",
    "backchannel",
    "greeting ready",
    "[CALL_STARTED]",
    "optimistic locking",
    "two-step DTMF",
    "conference transfer",
    "return to the AI",
    "watchdog",
    "proactive speech",
    "dashboard events",
    "after-call record",
    "caller identity",
    "admitted once",
    "Twilio signatures",
    "hostile media",
    "masked for staff",
    "staff-only dialing",
    "NATS users",
    "job leases",
    "resumes the reply",
    "agent jobs",
    "hash tags",
    "make chaos",
    "one public URL",
    "data folder",
    "dealerline` command",
    "data in and out",
    "admin pages",
    "callback requests",
    "voices",
    "stock Linux box",
)
_OUTSIDE = re.compile(
    r"/work/shared|\.\./shared|TWILIO\.md|ARCHITECTURE\.md|STYLE\.md|deep-dive"
    r"|seed\s*§|seed section|section \d+ of the seed|\bthe seed's\b"
)


def _expand(path: str) -> list[str]:
    """`services/{stt,tts}/Dockerfile` → both paths."""
    match = re.search(r"\{([^}]+)\}", path)
    if not match:
        return [path]
    return [
        q
        for alt in match.group(1).split(",")
        for q in _expand(path[: match.start()] + alt + path[match.end() :])
    ]


def _named_paths(text: str) -> list[str]:
    return [p for raw in _PATH.findall(text) for p in _expand(raw.rstrip("."))]


def test_every_path_the_docs_name_exists() -> None:
    pages = [*DOCS.glob("*.md"), ROOT / "README.md"]
    named = {(page.name, p) for page in pages for p in _named_paths(page.read_text())}
    assert len(named) > 30  # the index really names files
    missing = sorted(
        (page, p) for page, p in named if "*" not in p and not (ROOT / p.rstrip("/")).exists()
    )
    assert missing == []


def test_the_behaviour_index_names_one_file_for_each_behaviour() -> None:
    text = (DOCS / "behaviours.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    for behaviour in BEHAVIOURS:
        row = next((r for r in rows if behaviour.lower() in r.lower()), None)
        assert row is not None, f"the behaviour index has no row for {behaviour!r}"
        files = [p for p in _named_paths(row) if p.endswith(".py")]
        assert files, f"{behaviour!r}: the row names no source file"


def test_the_path_check_sees_a_missing_file() -> None:
    assert _named_paths("see `services/gateway/src/nope.py` and `libs/{a,b}/x.py:Thing`") == [
        "services/gateway/src/nope.py",
        "libs/a/x.py",
        "libs/b/x.py",
    ]


def test_nothing_points_outside_the_repository() -> None:
    sources = [
        *ROOT.glob("services/*/src/**/*.py"),
        *ROOT.glob("libs/*/src/**/*.py"),
        *ROOT.glob("services/*/README.md"),
        *ROOT.glob("services/*/API.md"),
        *ROOT.glob("docs/*.md"),
        ROOT / "README.md",
        ROOT / "deploy/README.md",
    ]
    offenders = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in sources
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if _OUTSIDE.search(line)
    ]
    assert offenders == []
