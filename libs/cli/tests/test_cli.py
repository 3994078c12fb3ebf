"""``dealerline`` as the operator runs it (the console script, as a process): help that
reads, migrate on a fresh file, the dealership's data out and back in (SQLite and
PostgreSQL), staff passwords, and one-line errors with exit code 2 for bad input."""

from __future__ import annotations

import os
import pty
import select as io_select
from pathlib import Path

import pytest
import yaml
from cli_kit import DEALERLINE, Cli
from pwdlib import PasswordHash
from sqlalchemy import select

from dealerline_common.db.engine import create_engine_from_url, session_factory
from dealerline_common.db.migrate import current_revision, head_revision
from dealerline_common.db.models import Staff
from dealerline_common.db.seed import seed
from dealerline_common.db.testing import (
    empty_database,
    run_sync,
    seeded_db_url_fixture,  # noqa: F401
    truncate_all,
)

COMMANDS = ("run", "demo", "import", "export", "set-password", "migrate", "voices")


@pytest.fixture
def seeded_sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The demo dealership in a SQLite file (where one database kind is enough)."""
    url = empty_database(request, "sqlite", tmp_path)
    run_sync(seed(url))
    return url


def test_help_lists_every_command_and_each_has_examples(cli: Cli) -> None:
    top = cli("--help")
    assert top.returncode == 0, top.stderr
    for name in COMMANDS:
        assert f"\n  {name} " in top.stdout, top.stdout
    for name in COMMANDS:
        result = cli(name, "--help")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"Usage: dealerline {name} "), result.stdout
        assert "Examples:" in result.stdout and f"dealerline {name}" in result.stdout


def test_migrate_brings_a_fresh_sqlite_file_to_the_latest_revision(
    cli: Cli, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'dealer.db'}"
    first = cli("migrate", "--database-url", url)
    assert first.returncode == 0, first.stderr
    assert "applying 0001_initial" in first.stdout
    assert f"applying {head_revision()}" in first.stdout
    assert run_sync(current_revision(url)) == head_revision()
    again = cli("migrate", "--database-url", url)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout and "applying" not in again.stdout


def _staff_emails(url: str) -> list[str]:
    async def read() -> list[str]:
        engine = create_engine_from_url(url)
        try:
            async with session_factory(engine)() as session:
                rows = await session.execute(select(Staff.email).order_by(Staff.email))
                return [email for email in rows.scalars() if email]
        finally:
            await engine.dispose()

    return run_sync(read())


def test_export_import_round_trip_and_removal(cli: Cli, seeded_db_url: str, tmp_path: Path) -> None:
    exported = tmp_path / "dealership.yaml"
    out = cli("export", str(exported), "--database-url", seeded_db_url)
    assert out.returncode == 0, out.stderr
    assert "4 staff" in out.stdout
    run_sync(truncate_all(seeded_db_url))

    loaded = cli("import", str(exported), "--database-url", seeded_db_url)
    assert loaded.returncode == 0, loaded.stderr
    assert "staff: 4 added" in loaded.stdout
    assert loaded.stdout.strip().splitlines()[-1].startswith("done: 60 added, 0 updated")
    again = tmp_path / "again.yaml"
    assert cli("export", str(again), "--database-url", seeded_db_url).returncode == 0
    assert again.read_bytes() == exported.read_bytes()

    data = yaml.safe_load(exported.read_text())
    gone = data["staff"].pop()["email"]
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(data, sort_keys=False))
    kept = cli("import", str(edited), "--keep-missing", "--database-url", seeded_db_url)
    assert kept.returncode == 0, kept.stderr
    assert "0 removed" in kept.stdout and gone in _staff_emails(seeded_db_url)
    removed = cli("import", str(edited), "--database-url", seeded_db_url)
    assert removed.returncode == 0, removed.stderr
    assert "staff: 0 added, 0 updated, 3 unchanged, 1 removed" in removed.stdout
    assert gone not in _staff_emails(seeded_db_url)
    assert len(_staff_emails(seeded_db_url)) == 3


def test_csv_folder_round_trip(cli: Cli, seeded_sqlite: str, tmp_path: Path) -> None:
    folder = tmp_path / "csv"
    assert cli("export", str(folder), "--database-url", seeded_sqlite).returncode == 0
    run_sync(truncate_all(seeded_sqlite))
    loaded = cli("import", str(folder), "--database-url", seeded_sqlite)
    assert loaded.returncode == 0, loaded.stderr
    assert "faq_entries: 20 added" in loaded.stdout
    second = tmp_path / "csv2"
    assert cli("export", str(second), "--database-url", seeded_sqlite).returncode == 0
    names = sorted(p.name for p in folder.iterdir())
    assert "staff.csv" in names and names == sorted(p.name for p in second.iterdir())
    for name in names:
        assert (second / name).read_bytes() == (folder / name).read_bytes(), name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("import", "no/such/dealership.yaml"), "no/such/dealership.yaml: no such file"),
        (("migrate", "--database-url", "mysql://db/dealer"), "unsupported database 'mysql'"),
        (("export", "x.yaml", "--database-url", "::not a url::"), "is not a database URL"),
        (("--env-file", "missing.env", "migrate"), "--env-file missing.env: no such file"),
        (("migrate", "--revision", "nope", "--database-url", "sqlite:///x.db"), "revision 'nope'"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    cli: Cli, args: tuple[str, ...], message: str
) -> None:
    result = cli(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in cli.one_line_error(result)


def test_an_invalid_file_changes_nothing(cli: Cli, seeded_sqlite: str, tmp_path: Path) -> None:
    before = _staff_emails(seeded_sqlite)
    bad = tmp_path / "bad.yaml"
    bad.write_text("dealership:\n  name: Oak Motors\nstaff:\n  - {name: No Phone}\n")
    result = cli("import", str(bad), "--database-url", seeded_sqlite)
    assert result.returncode == 2
    assert "bad.yaml" in cli.one_line_error(result)
    assert _staff_emails(seeded_sqlite) == before


def test_an_unmigrated_database_is_refused(cli: Cli, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    result = cli("export", str(tmp_path / "out.yaml"), "--database-url", url)
    assert result.returncode == 2
    assert "run `dealerline migrate` first" in cli.one_line_error(result)


def test_an_unreachable_database_is_exit_code_1(cli: Cli) -> None:
    result = cli("migrate", "--database-url", "postgresql://nobody@127.0.0.1:9/dealer")
    assert result.returncode == 1
    assert "127.0.0.1:9" in cli.one_line_error(result)


def test_set_password_reads_stdin_and_the_dashboard_accepts_it(
    cli: Cli, seeded_sqlite: str
) -> None:
    email = "maria.lopez@sunrisemotors.example"
    secret = "correct horse battery staple"
    result = cli(
        "set-password", "--email", email.upper(), "--database-url", seeded_sqlite,
        input=secret + "\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"password set for {email}" in result.stdout

    stored = _password_hash(seeded_sqlite, email)
    assert stored is not None and PasswordHash.recommended().verify(secret, stored)
    assert not PasswordHash.recommended().verify(secret + "x", stored)


def test_set_password_for_nobody_and_without_a_password(cli: Cli, seeded_sqlite: str) -> None:
    nobody = cli(
        "set-password", "--email", "nobody@example.com", "--database-url", seeded_sqlite,
        input="a long enough password\n",
    )  # fmt: skip
    assert nobody.returncode == 1
    assert "nobody@example.com" in nobody.stderr and "Traceback" not in nobody.stderr
    empty = cli(
        "set-password", "--email", "maria.lopez@sunrisemotors.example",
        "--database-url", seeded_sqlite, input="",
    )  # fmt: skip
    assert empty.returncode == 2
    assert "no password on stdin" in cli.one_line_error(empty)


def test_set_password_in_a_terminal_asks_twice(cli: Cli, seeded_sqlite: str) -> None:
    """In a terminal (a pty here) the dashboard's prompt reaches the operator through the
    command; a mismatch changes nothing, a match sets the password."""
    argv = [
        str(DEALERLINE), "set-password", "--email", "david.kim@sunrisemotors.example",
        "--database-url", seeded_sqlite,
    ]  # fmt: skip
    assert _in_a_terminal(argv, ["first-password-1", "other-password-2"])[0] != 0
    assert _password_hash(seeded_sqlite, "david.kim@sunrisemotors.example") is None
    code, shown = _in_a_terminal(argv, ["tty password 123", "tty password 123"])
    assert code == 0, shown
    assert "tty password 123" not in shown  # not echoed
    stored = _password_hash(seeded_sqlite, "david.kim@sunrisemotors.example")
    assert stored is not None and PasswordHash.recommended().verify("tty password 123", stored)


def _in_a_terminal(argv: list[str], answers: list[str]) -> tuple[int, str]:
    """Run ``argv`` on a pseudo-terminal, typing each answer after each ``: `` prompt."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes the command
        os.execv(argv[0], argv)
    seen = b""
    pending = list(answers)
    while True:
        ready, _, _ = io_select.select([fd], [], [], 60)
        assert ready, seen
        try:
            chunk = os.read(fd, 1024)
        except OSError:  # the terminal closed: the command exited
            break
        if not chunk:
            break
        seen += chunk
        if pending and seen.endswith(b": "):  # a prompt, waiting
            os.write(fd, pending.pop(0).encode() + b"\n")
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), seen.decode(errors="replace")


def _password_hash(url: str, email: str) -> str | None:
    async def read() -> str | None:
        engine = create_engine_from_url(url)
        try:
            async with session_factory(engine)() as session:
                rows = await session.execute(
                    select(Staff.password_hash).where(Staff.email == email)
                )
                return rows.scalar_one()
        finally:
            await engine.dispose()

    return run_sync(read())
