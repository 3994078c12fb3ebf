"""The dealership's data in and out (YAML file, CSV folder), on SQLite and PostgreSQL:
export → import into an empty database → export gives the same bytes, YAML and CSV give
the same database, rows missing from the file are removed, and operational data
(customers, appointments, callback requests) survives every removal."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select

from dealerline_common.db import (
    DealershipDataError,
    create_engine_from_url,
    export_dealership,
    import_dealership,
    seed,
    session_factory,
)
from dealerline_common.db.models import (
    Appointment,
    CallbackRequest,
    Customer,
    DealershipProfile,
    FaqEntry,
    Holiday,
    ServiceBay,
    ServiceType,
    Staff,
)
from dealerline_common.db.testing import (  # noqa: F401
    migrated_db_url_fixture,
    sqlite_db_url_fixture,
    truncate_all,
)

TODAY = date(2026, 3, 2)  # a Monday; the week has no holiday


async def _rows(url: str, model: Any) -> list[Any]:
    engine = create_engine_from_url(url)
    try:
        async with session_factory(engine)() as s:
            return list((await s.execute(select(model).order_by(model.id))).scalars())
    finally:
        await engine.dispose()


async def _count(url: str, model: Any) -> int:
    engine = create_engine_from_url(url)
    try:
        async with session_factory(engine)() as s:
            return int((await s.execute(select(func.count()).select_from(model))).scalar_one())
    finally:
        await engine.dispose()


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


def _save(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


async def _demo_with_assistant(url: str) -> None:
    await seed(url, today=TODAY)
    engine = create_engine_from_url(url)
    try:
        async with session_factory(engine)() as s:
            profile = (await s.execute(select(DealershipProfile))).scalar_one()
            profile.assistant_name = "Nora"
            profile.persona = "Warm and brief.\nNever pushy about upsells."
            profile.voice = "af_heart"
            await s.commit()
    finally:
        await engine.dispose()


async def test_export_import_export_is_byte_identical_and_yaml_equals_csv(
    migrated_db_url: str, tmp_path: Path
) -> None:
    await _demo_with_assistant(migrated_db_url)
    first_yaml, first_csv = tmp_path / "first.yaml", tmp_path / "first-csv"
    counts = await export_dealership(migrated_db_url, first_yaml)
    assert counts == {
        "dealership": 1,
        "hours": 7,
        "holidays": 12,
        "bays": 3,
        "service_types": 13,
        "staff": 4,
        "faq": 20,
    }
    await export_dealership(migrated_db_url, first_csv)

    for source in (first_yaml, first_csv):
        await truncate_all(migrated_db_url)
        report = await import_dealership(migrated_db_url, source, today=TODAY)
        assert report["faq_entries"].added == 20
        assert report["staff"].added == 4
        again_yaml, again_csv = tmp_path / f"{source.name}.yaml", tmp_path / f"{source.name}-csv"
        await export_dealership(migrated_db_url, again_yaml)
        await export_dealership(migrated_db_url, again_csv)
        assert again_yaml.read_bytes() == first_yaml.read_bytes()
        for csv_file in sorted(first_csv.iterdir()):
            assert (again_csv / csv_file.name).read_bytes() == csv_file.read_bytes(), csv_file

    profile = (await _rows(migrated_db_url, DealershipProfile))[0]
    assert (profile.name, profile.assistant_name, profile.voice) == (
        "Sunrise Motors",
        "Nora",
        "af_heart",
    )
    assert profile.persona == "Warm and brief.\nNever pushy about upsells."
    text = first_yaml.read_text(encoding="utf-8")
    assert "price: {min: 189, max: 349}" in text  # dollars, as the demo file writes them
    assert "sunday: closed" in text
    services_csv = (first_csv / "services.csv").read_text(encoding="utf-8").splitlines()
    assert services_csv[0] == "name,description,duration_minutes,price_min,price_max,bays,active"
    assert "Brake Pad Replacement" in services_csv[5]
    assert ",120,189.00,349.00,General Repair Bay,true" in services_csv[5]


async def test_rows_missing_from_the_file_are_removed(migrated_db_url: str, tmp_path: Path) -> None:
    await seed(migrated_db_url, today=TODAY)  # with customers and four appointments
    path = tmp_path / "dealer.yaml"
    await export_dealership(migrated_db_url, path)
    data = _load(path)
    booked = {a.service_type_id for a in await _rows(migrated_db_url, Appointment)}
    services = {s.id: s.name for s in await _rows(migrated_db_url, ServiceType)}
    unbooked = next(name for sid, name in services.items() if sid not in booked)
    data["service_types"] = [s for s in data["service_types"] if s["name"] != unbooked]
    data["staff"] = [s for s in data["staff"] if s["name"] != "Tom Becker"]
    data["faq"] = data["faq"][1:]
    data["holidays"] = [h for h in data["holidays"] if h["name"] != "Labor Day"]
    data["bays"].append({"name": "Detailing Bay", "capacity": 1})
    data["staff"][0]["hunt_order"] = 7
    _save(path, data)

    report = await import_dealership(migrated_db_url, path, today=TODAY)

    assert report["service_types"].removed == 1
    assert report["staff"].removed == 1
    assert report["faq_entries"].removed == 1
    assert report["holidays"].removed == 2  # this year's and next year's
    assert report["service_bays"].added == 1
    assert report["staff"].updated == 1
    assert unbooked not in {s.name for s in await _rows(migrated_db_url, ServiceType)}
    assert "Tom Becker" not in {s.name for s in await _rows(migrated_db_url, Staff)}
    assert await _count(migrated_db_url, FaqEntry) == 19
    assert "Labor Day" not in {h.name for h in await _rows(migrated_db_url, Holiday)}
    # Operational data is never removed by an import.
    assert await _count(migrated_db_url, Customer) == 5
    assert await _count(migrated_db_url, Appointment) == 4
    assert any("1 removed" in line for line in report.lines())

    # Nothing left to do the second time.
    assert (await import_dealership(migrated_db_url, path, today=TODAY)).changed == 0


async def test_remove_false_only_adds_and_updates(sqlite_db_url: str, tmp_path: Path) -> None:
    await seed(sqlite_db_url, today=TODAY)
    path = tmp_path / "dealer.yaml"
    await export_dealership(sqlite_db_url, path)
    data = _load(path)
    data["faq"] = data["faq"][:1]
    report = await import_dealership(sqlite_db_url, _save(path, data), remove=False, today=TODAY)
    assert report.changed == 0
    assert await _count(sqlite_db_url, FaqEntry) == 20


async def test_absent_section_is_left_alone_and_empty_section_empties(
    sqlite_db_url: str, tmp_path: Path
) -> None:
    await seed(sqlite_db_url, today=TODAY)
    path = tmp_path / "dealer.yaml"
    await export_dealership(sqlite_db_url, path)
    data = _load(path)
    del data["staff"]
    data["faq"] = []
    report = await import_dealership(sqlite_db_url, _save(path, data), today=TODAY)
    assert await _count(sqlite_db_url, Staff) == 4
    assert report["faq_entries"].removed == 20
    assert await _count(sqlite_db_url, FaqEntry) == 0


async def test_a_booked_service_is_kept_inactive_and_a_booked_bay_is_refused(
    migrated_db_url: str, tmp_path: Path
) -> None:
    await seed(migrated_db_url, today=TODAY)
    path = tmp_path / "dealer.yaml"
    await export_dealership(migrated_db_url, path)
    original = _load(path)

    data = _load(path)
    data["service_types"] = [s for s in data["service_types"] if s["name"] != "Wheel Alignment"]
    report = await import_dealership(migrated_db_url, _save(path, data), today=TODAY)
    alignment = [
        s for s in await _rows(migrated_db_url, ServiceType) if s.name == "Wheel Alignment"
    ]
    assert alignment and alignment[0].active is False
    assert any("'Wheel Alignment' is kept, inactive: 1 appointments" in n for n in report.notes)
    assert await _count(migrated_db_url, Appointment) == 4

    before = await export_dealership(migrated_db_url, tmp_path / "before.yaml")
    data = original
    data["bays"] = [b for b in data["bays"] if b["name"] != "Express Bay"]
    for s in data["service_types"]:
        s["bays"] = [b for b in s["bays"] if b != "Express Bay"] or ["General Repair Bay"]
    data["faq"] = []  # would be removed, but the whole import is refused
    with pytest.raises(DealershipDataError, match=r"cannot remove bay\(s\) 'Express Bay' \(2 appo"):
        await import_dealership(migrated_db_url, _save(path, data), today=TODAY)
    after = await export_dealership(migrated_db_url, tmp_path / "after.yaml")
    assert before == after
    assert (tmp_path / "before.yaml").read_bytes() == (tmp_path / "after.yaml").read_bytes()


async def test_removed_staff_who_closed_callbacks_are_kept_off_duty_and_email_keeps_a_login(
    migrated_db_url: str, tmp_path: Path
) -> None:
    await seed(migrated_db_url, today=TODAY)
    engine = create_engine_from_url(migrated_db_url)
    try:
        async with session_factory(engine)() as s:
            staff = {r.name: r for r in (await s.execute(select(Staff))).scalars()}
            staff["David Kim"].password_hash = "argon2-hash-of-a-password"
            staff["Maria Lopez"].password_hash = "argon2-hash-of-another"
            s.add(
                CallbackRequest(
                    session_id="s-1",
                    preferred_window="tomorrow morning",
                    reason="trade-in",
                    status="done",
                    done_by=staff["Maria Lopez"].id,
                )
            )
            await s.commit()
            david_id = staff["David Kim"].id
    finally:
        await engine.dispose()
    path = tmp_path / "dealer.yaml"
    await export_dealership(migrated_db_url, path)
    data = _load(path)
    data["staff"] = [s for s in data["staff"] if s["name"] not in ("Tom Becker", "Maria Lopez")]
    david = next(s for s in data["staff"] if s["name"] == "David Kim")
    david["phone"] = "+14155550188"  # a new phone; the email says who it is
    report = await import_dealership(migrated_db_url, _save(path, data), today=TODAY)
    # Tom goes; Maria closed a callback request, so she stays (who closed it is kept), off
    # duty and without a login, and the report says so.
    assert report["staff"].removed == 1 and report["staff"].updated == 2
    assert any("'Maria Lopez' is kept" in note for note in report.notes), report.notes

    rows = {r.name: r for r in await _rows(migrated_db_url, Staff)}
    callback = (await _rows(migrated_db_url, CallbackRequest))[0]
    assert (callback.status, callback.done_by) == ("done", rows["Maria Lopez"].id)
    assert (rows["Maria Lopez"].on_duty, rows["Maria Lopez"].password_hash) == (False, None)
    assert "Tom Becker" not in rows
    assert rows["David Kim"].id == david_id
    assert rows["David Kim"].phone == "+14155550188"
    assert rows["David Kim"].password_hash == "argon2-hash-of-a-password"


async def test_csv_folder_imports_and_removes(sqlite_db_url: str, tmp_path: Path) -> None:
    await seed(sqlite_db_url, today=TODAY)
    folder = tmp_path / "dealer"
    await export_dealership(sqlite_db_url, folder)
    faq = (folder / "faq.csv").read_text(encoding="utf-8").splitlines()
    (folder / "faq.csv").write_text("\n".join(faq[:3]) + "\n", encoding="utf-8")
    bays = (folder / "bays.csv").read_text(encoding="utf-8")
    (folder / "bays.csv").write_text(bays + "Detailing Bay,1\n", encoding="utf-8")
    services = (folder / "services.csv").read_text(encoding="utf-8")
    (folder / "services.csv").write_text(
        services + "Detailing,Hand wash and wax.,120,149,199,Detailing Bay;Express Bay,\n",
        encoding="utf-8",
    )
    report = await import_dealership(sqlite_db_url, folder, today=TODAY)
    assert report["faq_entries"].removed == 18
    assert await _count(sqlite_db_url, FaqEntry) == 2
    engine = create_engine_from_url(sqlite_db_url)
    try:
        async with session_factory(engine)() as s:
            from sqlalchemy.orm import selectinload

            detailing = (
                await s.execute(
                    select(ServiceType)
                    .where(ServiceType.name == "Detailing")
                    .options(selectinload(ServiceType.bays))
                )
            ).scalar_one()
            assert (detailing.price_min_cents, detailing.price_max_cents) == (14900, 19900)
            assert detailing.active is True  # an empty cell is the default
            assert [b.name for b in detailing.bays] == ["Express Bay", "Detailing Bay"]
    finally:
        await engine.dispose()
    assert "Detailing Bay" in {b.name for b in await _rows(sqlite_db_url, ServiceBay)}


def _csv_folder(tmp_path: Path, sqlite_db_url: str) -> Path:
    from dealerline_common.db.testing import run_sync

    run_sync(seed(sqlite_db_url, today=TODAY))
    folder = tmp_path / "dealer"
    run_sync(export_dealership(sqlite_db_url, folder))
    return folder


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda f: _replace(f / "services.csv", ",30,39.95,", ",30,cheap,"),
            r"services\.csv line 2, column price_min: .*decimal",
        ),
        (
            lambda f: _replace(f / "staff.csv", "+14155550112", "555-0112"),
            r"staff\.csv line 3, column phone",
        ),
        (
            lambda f: _replace(f / "hours.csv", "monday,07:30,18:00", "monday,19:00,18:00"),
            r"hours\.csv line 2: .*open must be before close",
        ),
        (
            lambda f: _replace(f / "hours.csv", "sunday", "funday"),
            r"hours\.csv line 8, column weekday: 'funday' is not one of",
        ),
        (
            lambda f: _replace(f / "bays.csv", "name,capacity", "name,size"),
            r"bays\.csv line 1 \(header\): unknown column\(s\) \['size'\]",
        ),
        (
            lambda f: _replace(f / "services.csv", "Express Bay;General", "Expres Bay;General"),
            r"service 'Conventional Oil Change' names unknown bay\(s\) \['Expres Bay'\]",
        ),
        (lambda f: (f / "hours.csv").unlink(), r"hours\.csv is missing"),
        (lambda f: (f / "Staff-old.csv").write_text("x\n"), r"unexpected file\(s\)"),
        (
            lambda f: _replace(f / "profile.csv", "America/Los_Angeles", "Mars/Olympus"),
            r"profile\.csv line 2, column timezone: .*unknown timezone",
        ),
    ],
)
def test_bad_csv_is_refused_naming_file_line_and_column(
    sqlite_db_url: str, tmp_path: Path, change: Any, message: str
) -> None:
    from dealerline_common.db.testing import run_sync

    folder = _csv_folder(tmp_path, sqlite_db_url)
    run_sync(truncate_all(sqlite_db_url))
    change(folder)
    with pytest.raises(DealershipDataError, match=message):
        run_sync(import_dealership(sqlite_db_url, folder, today=TODAY))
    assert run_sync(_count(sqlite_db_url, FaqEntry)) == 0  # nothing written


async def test_bad_yaml_names_the_line(sqlite_db_url: str, tmp_path: Path) -> None:
    await seed(sqlite_db_url, today=TODAY)
    path = tmp_path / "dealer.yaml"
    await export_dealership(sqlite_db_url, path)
    lines = path.read_text(encoding="utf-8").splitlines()
    number = next(i for i, line in enumerate(lines, 1) if "duration_minutes: 120" in line)
    lines[number - 1] = lines[number - 1].replace("120", "-5")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(
        DealershipDataError,
        match=rf"dealer\.yaml: line {number}, service_types\.\d+\.duration_minutes: .*greater",
    ):
        await import_dealership(sqlite_db_url, path, today=TODAY)
    with pytest.raises(DealershipDataError, match="does not exist"):
        await import_dealership(sqlite_db_url, tmp_path / "nowhere", today=TODAY)


async def test_the_demo_file_imports_with_its_customers_and_an_empty_database_cannot_export(
    sqlite_db_url: str, tmp_path: Path
) -> None:
    from dealerline_common.db import DEMO_FILE

    with pytest.raises(DealershipDataError, match="no dealership profile to export"):
        await export_dealership(sqlite_db_url, tmp_path / "nothing.yaml")
    report = await import_dealership(sqlite_db_url, DEMO_FILE, today=TODAY)
    assert (report["customers"].added, report["appointments"].added) == (5, 4)
    assert (await _rows(sqlite_db_url, DealershipProfile))[0].assistant_name == "Ava"
    with pytest.raises(DealershipDataError, match=r"give a \.yaml/\.yml file or a folder"):
        await import_dealership(sqlite_db_url, Path(__file__), today=TODAY)
