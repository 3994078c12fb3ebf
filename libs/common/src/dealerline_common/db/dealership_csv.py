"""The dealership's data as a folder of CSV files, one per table (docs/dealership-data.md).

A folder holds ``profile.csv`` and ``hours.csv`` (required) and, optionally,
``holidays.csv``, ``bays.csv``, ``services.csv``, ``staff.csv`` and ``faq.csv``; each starts
with a header row naming its columns (in any order; optional columns may be left out).
Lists (a service's bays, an FAQ entry's tags) sit in one cell, separated by ``;``. An empty
cell means "not given" (the field's default).

Reading turns the folder into the same data a YAML file holds and validates it with the
same schema (:class:`~.seed_file.SeedFile`), so an error names the file, the line and the
column. Writing takes the data :func:`~.dealership_io.export_dealership` built for YAML.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from .seed_file import WEEKDAY_NAMES, SeedError, SeedFile, validate_seed_data

__all__ = ["CSV_TABLES", "CsvTable", "read_csv_folder", "write_csv_folder"]


@dataclass(frozen=True)
class CsvTable:
    file: str
    section: str  # the matching top-level key of the YAML file
    columns: tuple[str, ...]  # every column, in the order an export writes them
    required: tuple[str, ...]  # columns the header must have
    lists: tuple[str, ...] = ()  # columns holding a ;-separated list


CSV_TABLES: tuple[CsvTable, ...] = (
    CsvTable(
        "profile.csv",
        "dealership",
        (
            "name",
            "timezone",
            "address",
            "phone",
            "service_desk_email",
            "assistant_name",
            "persona",
            "voice",
        ),
        ("name", "timezone"),
    ),
    CsvTable("hours.csv", "hours", ("weekday", "open", "close"), ("weekday", "open", "close")),
    CsvTable("holidays.csv", "holidays", ("date", "name"), ("date", "name")),
    CsvTable("bays.csv", "bays", ("name", "capacity"), ("name",)),
    CsvTable(
        "services.csv",
        "service_types",
        ("name", "description", "duration_minutes", "price_min", "price_max", "bays", "active"),
        ("name", "duration_minutes", "price_min", "price_max", "bays"),
        lists=("bays",),
    ),
    CsvTable(
        "staff.csv",
        "staff",
        ("name", "role", "phone", "email", "hunt_order", "on_duty"),
        ("name", "role", "phone"),
    ),
    CsvTable("faq.csv", "faq", ("question", "answer", "tags"), ("question", "answer"), ("tags",)),
)
_REQUIRED_FILES = ("profile.csv", "hours.csv")
_BY_SECTION = {t.section: t for t in CSV_TABLES}


# ----------------------------------------------------------------------------- reading


def _read_rows(path: Path, table: CsvTable) -> list[tuple[int, dict[str, str]]]:
    """The data rows of ``path`` as (line number, {column: non-empty value})."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's BOM is fine
    except (OSError, UnicodeDecodeError) as exc:
        raise SeedError(f"cannot read {path}: {exc}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip() for h in next(reader, [])]
    unknown = [h for h in header if h not in table.columns]
    missing = [c for c in table.required if c not in header]
    if unknown or missing or len(set(header)) != len(header):
        raise SeedError(
            f"{path.name} line 1 (header): "
            + "; ".join(
                ([f"unknown column(s) {unknown}"] if unknown else [])
                + ([f"missing column(s) {missing}"] if missing else [])
                + (["a column is named twice"] if len(set(header)) != len(header) else [])
            )
            + f" (columns: {', '.join(table.columns)})"
        )
    rows = []
    for cells in reader:
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue  # blank lines are fine
        if len(cells) > len(header):
            raise SeedError(
                f"{path.name} line {line}: {len(cells)} cells, header has {len(header)}"
            )
        rows.append(
            (line, {h: c.strip() for h, c in zip(header, cells, strict=False) if c.strip()})
        )
    return rows


def _item(table: CsvTable, cells: dict[str, str]) -> dict[str, Any]:
    """One CSV row as the YAML file would say it."""
    item: dict[str, Any] = {}
    for column, value in cells.items():
        if column in table.lists:
            item[column] = [v.strip() for v in value.split(";") if v.strip()]
        elif column in ("price_min", "price_max"):
            item.setdefault("price", {})[column.removeprefix("price_")] = value
        else:
            item[column] = value
    return item


def _hours(
    path: Path, rows: list[tuple[int, dict[str, str]]]
) -> tuple[dict[str, Any], dict[str, int]]:
    hours: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for line, cells in rows:
        day = cells.get("weekday", "").lower()
        if day not in WEEKDAY_NAMES:
            raise SeedError(
                f"{path.name} line {line}, column weekday: {cells.get('weekday')!r} is not one of "
                f"{', '.join(WEEKDAY_NAMES)}"
            )
        if day in hours:
            raise SeedError(f"{path.name} line {line}: {day} is listed twice")
        times = {k: v for k, v in cells.items() if k in ("open", "close")}
        hours[day] = times if times else "closed"
        lines[day] = line
    return hours, lines


def read_csv_folder(folder: Path) -> SeedFile:
    """The folder's files as a validated :class:`SeedFile` (see the module docs)."""
    if not folder.is_dir():
        raise SeedError(f"{folder} is not a folder (give a .yaml file or a folder of CSV files)")
    known = {t.file for t in CSV_TABLES}
    strays = sorted(p.name for p in folder.iterdir() if p.suffix.lower() == ".csv")
    strays = [name for name in strays if name not in known]
    if strays:
        raise SeedError(
            f"{folder}: unexpected file(s) {strays}; the files are {', '.join(sorted(known))}"
        )
    data: dict[str, Any] = {}
    lines: dict[str, Any] = {}  # section -> [line per item] | {weekday: line} | line
    for table in CSV_TABLES:
        path = folder / table.file
        if not path.exists():
            if table.file in _REQUIRED_FILES:
                raise SeedError(f"{folder}: {table.file} is missing (it is required)")
            continue  # an absent file leaves its table as it is
        rows = _read_rows(path, table)
        if table.section == "dealership":
            if len(rows) != 1:
                raise SeedError(f"{path.name}: needs exactly one row under the header")
            data["dealership"] = _item(table, rows[0][1])
            lines["dealership"] = rows[0][0]
        elif table.section == "hours":
            data["hours"], lines["hours"] = _hours(path, rows)
        else:
            data[table.section] = [_item(table, cells) for _line, cells in rows]
            lines[table.section] = [line for line, _cells in rows]

    def where(loc: tuple[int | str, ...]) -> str:
        return _place(loc, lines)

    return validate_seed_data(data, str(folder), where)


def _place(loc: tuple[int | str, ...], lines: dict[str, Any]) -> str:
    """A validation error's place: ``services.csv line 4, column price_min``."""
    if not loc or loc[0] not in _BY_SECTION:
        return ".".join(str(p) for p in loc) or "(the files together)"
    table = _BY_SECTION[str(loc[0])]
    rest = list(loc[1:])
    line = lines.get(table.section)
    first = rest[0] if rest else None
    if isinstance(line, list) and isinstance(first, int) and first < len(line):
        line = line[first]
        rest.pop(0)
    elif isinstance(line, dict) and rest:
        line = line.get(str(rest.pop(0)))
    where = f"{table.file} line {line}" if isinstance(line, int) else table.file
    if rest:
        column = str(rest[0])
        if column == "price" and len(rest) > 1:
            column = f"price_{rest[1]}"
        where += f", column {column}"
    return where


# ----------------------------------------------------------------------------- writing


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _money(value: Any) -> str:
    return f"{Decimal(str(value)):.2f}"


def _list_cell(what: str, values: list[str]) -> str:
    bad = [v for v in values if ";" in v]
    if bad:
        raise SeedError(f"{what} {bad} contain ';', which a CSV list cannot hold: export to YAML")
    return ";".join(values)


def _csv_rows(table: CsvTable, data: dict[str, Any]) -> list[list[str]]:
    section = data[table.section]
    if table.section == "dealership":
        return [[_cell(section.get(c)) for c in table.columns]]
    if table.section == "hours":
        return [
            [day, "", ""] if spec == "closed" else [day, spec["open"], spec["close"]]
            for day, spec in section.items()
        ]
    rows = []
    for item in section:
        row = []
        for column in table.columns:
            if column in table.lists:
                row.append(_list_cell(f"{table.section} {column}", item.get(column, [])))
            elif column in ("price_min", "price_max"):
                row.append(_money(item["price"][column.removeprefix("price_")]))
            else:
                row.append(_cell(item.get(column)))
        rows.append(row)
    return rows


def write_csv_folder(folder: Path, data: dict[str, Any]) -> list[Path]:
    """Write every table of ``data`` (shaped like the YAML file) into ``folder``."""
    if folder.exists() and not folder.is_dir():
        raise SeedError(f"{folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for table in CSV_TABLES:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(table.columns)
        writer.writerows(_csv_rows(table, data))
        path = folder / table.file
        path.write_text(out.getvalue(), encoding="utf-8")
        written.append(path)
    return written
