"""What a seed or an import changed, table by table (:class:`SeedReport`), and the one way
rows are written: only the fields that differ (:func:`sync_fields`), so seeding twice
changes nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Counts", "SeedReport", "sync_fields"]


@dataclass
class Counts:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0

    def count(self, *, added: bool, changed: bool) -> None:
        if added:
            self.added += 1
        elif changed:
            self.updated += 1
        else:
            self.unchanged += 1


@dataclass
class SeedReport:
    """Rows added, updated, unchanged and removed per table (``report["staff"].added``),
    and ``notes``: what an import did instead of removing a row (a service kept inactive
    because appointments name it, …)."""

    tables: dict[str, Counts] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, table: str) -> Counts:
        return self.tables.setdefault(table, Counts())

    @property
    def changed(self) -> int:
        """Rows added, updated or removed (0 when the database already matched the file)."""
        return sum(c.added + c.updated + c.removed for c in self.tables.values())

    def lines(self) -> list[str]:
        out = []
        for name, c in self.tables.items():
            line = f"  {name}: {c.added} added, {c.updated} updated, {c.unchanged} unchanged"
            out.append(line + (f", {c.removed} removed" if c.removed else ""))
        return out + [f"  note: {note}" for note in self.notes]


def sync_fields(row: Any, values: dict[str, Any]) -> bool:
    """Set the differing ``values`` on ``row``; True when something changed."""
    changed = False
    for key, value in values.items():
        if getattr(row, key) != value:
            setattr(row, key, value)
            changed = True
    return changed
