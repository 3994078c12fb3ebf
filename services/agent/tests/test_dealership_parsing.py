"""Dates, times and FAQ text as they reach the tools."""

from __future__ import annotations

from datetime import date, time

import pytest

from dealerline_agent.dealership.faq import FaqDocument, rank, stem, tokens
from dealerline_agent.dealership.parsing import (
    parse_date,
    parse_time,
    say_date,
    say_time,
)

MONDAY = date(2026, 3, 2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-05", date(2026, 3, 5)),
        ("today", MONDAY),
        ("Tomorrow", date(2026, 3, 3)),
        ("day after tomorrow", date(2026, 3, 4)),
        ("friday", date(2026, 3, 6)),
        ("this Friday", date(2026, 3, 6)),
        ("next tuesday", date(2026, 3, 3)),
        ("monday", date(2026, 3, 9)),  # said on a Monday: the next one
        ("March 5", date(2026, 3, 5)),
        ("march 5th", date(2026, 3, 5)),
        ("5th of March", date(2026, 3, 5)),
        ("3/5", date(2026, 3, 5)),
        ("Feb 1", date(2027, 2, 1)),  # already past this year
    ],
)
def test_dates(text: str, expected: date) -> None:
    assert parse_date(text, MONDAY) == expected


@pytest.mark.parametrize("text", ["", "someday", "2026-13-01", "next week maybe"])
def test_unreadable_dates(text: str) -> None:
    with pytest.raises(ValueError, match="date"):
        parse_date(text, MONDAY)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("14:30", time(14, 30)),
        ("09:00", time(9, 0)),
        ("2:30 pm", time(14, 30)),
        ("2pm", time(14, 0)),
        ("7:30 a.m.", time(7, 30)),
        ("12 pm", time(12, 0)),
        ("noon", time(12, 0)),
        ("9", time(9, 0)),
        ("3", time(15, 0)),  # "at 3" in a workshop is the afternoon
        ("0930", time(9, 30)),
    ],
)
def test_times(text: str, expected: time) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize("text", ["13pm", "25:00", "9:75", "teatime", ""])
def test_unreadable_times(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)


def test_spoken_forms() -> None:
    assert say_time(time(13, 5)) == "1:05 PM"
    assert say_time(time(0, 30)) == "12:30 AM"
    assert say_date(date(2026, 3, 5)) == "Thursday, March 5"


def test_stemming_and_stop_words() -> None:
    assert {stem(w) for w in ("change", "changes", "changing", "changed")} == {"chang"}
    assert stem("tires") == stem("tire")
    assert stem("batteries") == "battery"
    assert tokens("Do you guys take Apple Pay?") == ["take", "appl", "pay"]


def test_rank_weights_rarity_and_coverage() -> None:
    docs = [
        FaqDocument(1, "Do you sell cars?", "Yes, new and used cars.", ("sales", "car")),
        FaqDocument(2, "Do you have loaner cars?", "Loaners for long repairs.", ("loaner",)),
        FaqDocument(3, "Where is the car wash?", "Behind the car park.", ("car wash",)),
    ]
    ranked = rank("can I get a loaner car", docs)
    assert [d.id for d, _ in ranked][0] == 2
    assert rank("", docs) == []
    assert rank("zebra", docs) == []
    assert len(rank("car", docs, limit=2)) == 2
