"""What a seed run changed, table by table (:class:`SeedReport`), and the one way rows
are written: only the fields that differ (:func:`sync_fields`), so seeding twice changes
nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Counts", "SeedReport", "sync_fields"]


@dataclass
class Counts:
    added: int = 0
    updated: int = 0
    unchanged: int = 0

    def count(self, *, added: bool, changed: bool) -> None:
        if added:
            self.added += 1
        elif changed:
            self.updated += 1
        else:
            self.unchanged += 1


@dataclass
class SeedReport:
    tables: dict[str, Counts] = field(default_factory=dict)

    def __getitem__(self, table: str) -> Counts:
        return self.tables.setdefault(table, Counts())

    @property
    def changed(self) -> int:
        """Rows added or updated (0 when the database already matched the file)."""
        return sum(c.added + c.updated for c in self.tables.values())

    def lines(self) -> list[str]:
        return [
            f"  {name}: {c.added} added, {c.updated} updated, {c.unchanged} unchanged"
            for name, c in self.tables.items()
        ]


def sync_fields(row: Any, values: dict[str, Any]) -> bool:
    """Set the differing ``values`` on ``row``; True when something changed."""
    changed = False
    for key, value in values.items():
        if getattr(row, key) != value:
            setattr(row, key, value)
            changed = True
    return changed
