"""The sentence splitter, fed whole texts and token by token."""

from __future__ import annotations

import pytest

from dealerline_agent.sentences import SentenceSplitter, split_sentences


def stream(text: str, size: int = 1, clause_min_chars: int = 60) -> list[str]:
    """Feed ``text`` in pieces of ``size`` characters, as an LLM stream would."""
    splitter = SentenceSplitter(clause_min_chars=clause_min_chars)
    out: list[str] = []
    for i in range(0, len(text), size):
        out.extend(splitter.push(text[i : i + size]))
    return [*out, *splitter.flush()]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello there. How can I help?", ["Hello there.", "How can I help?"]),
        ("Great! See you soon.", ["Great!", "See you soon."]),
        ("Really?! Wow.", ["Really?!", "Wow."]),
        ("Dr. Smith will see you. Thanks.", ["Dr. Smith will see you.", "Thanks."]),
        ("Mr. and Mrs. Lee are here. Ok.", ["Mr. and Mrs. Lee are here.", "Ok."]),
        ("We are on Main St. near the park. Bye.", ["We are on Main St. near the park.", "Bye."]),
        ("It costs 3.5 times more. Sorry.", ["It costs 3.5 times more.", "Sorry."]),
        ("Come at 9 a.m. tomorrow. Thanks.", ["Come at 9 a.m. tomorrow.", "Thanks."]),
        ("See you at 9 a.m. Thanks!", ["See you at 9 a.m.", "Thanks!"]),
        ("Use bay No. 4 today. Ok.", ["Use bay No. 4 today.", "Ok."]),
        ("Ask for J. Smith please. Bye.", ["Ask for J. Smith please.", "Bye."]),
        ('He said "yes." Then left.', ['He said "yes."', "Then left."]),
        ("Tires, e.g. winter ones, are in. Ok.", ["Tires, e.g. winter ones, are in.", "Ok."]),
        ("Wait... what? Ok.", ["Wait...", "what?", "Ok."]),
        ("No trailing punctuation", ["No trailing punctuation"]),
        ("The total is $1,250.00 today.", ["The total is $1,250.00 today."]),
        ("", []),
        ("   ", []),
    ],
)
def test_split(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected  # word-ish tokens, as an LLM streams


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Dr. Smith will see you. Thanks.", ["Dr. Smith will see you.", "Thanks."]),
        ("It costs 3.5 times more. Sorry.", ["It costs 3.5 times more.", "Sorry."]),
        ("Come at 9 a.m. tomorrow. Thanks.", ["Come at 9 a.m. tomorrow.", "Thanks."]),
        ("Ask for J. Smith please. Bye.", ["Ask for J. Smith please.", "Bye."]),
        ("Use bay No. 4 today. Ok.", ["Use bay No. 4 today.", "Ok."]),
        ("Tires, e.g. winter ones, are in. Ok.", ["Tires, e.g. winter ones, are in.", "Ok."]),
    ],
)
@pytest.mark.parametrize("size", [1, 3])
def test_split_in_odd_pieces(text: str, expected: list[str], size: int) -> None:
    assert stream(text, size=size) == expected


def test_sentence_ends_without_waiting_for_the_next_token() -> None:
    splitter = SentenceSplitter()
    assert splitter.push("Let me check that for you.") == ["Let me check that for you."]
    assert splitter.push(" Really?") == ["Really?"]
    assert splitter.push(' "Great."') == ['"Great."']
    assert splitter.push(" Call Dr.") == []  # a title never ends a sentence
    assert splitter.push(" Lee at 9 a.m.") == []  # the next word decides
    assert splitter.push(" tomorrow.") == ["Call Dr. Lee at 9 a.m. tomorrow."]
    assert splitter.flush() == []


def test_a_quote_streamed_after_its_sentence_is_dropped() -> None:
    splitter = SentenceSplitter()
    assert splitter.push('He said "yes.') == ['He said "yes.']
    assert splitter.push('"') == []
    assert splitter.push(" Then left.") == ["Then left."]
    assert splitter.flush() == []


def test_waits_for_more_text_before_deciding() -> None:
    splitter = SentenceSplitter()
    assert splitter.push("It is 3.") == []  # might become 3.5
    assert splitter.push("5 miles") == []
    assert splitter.push(" away. Ok") == ["It is 3.5 miles away."]
    assert splitter.push(" then") == []
    assert splitter.flush() == ["Ok then"]


def test_am_waits_for_next_word() -> None:
    splitter = SentenceSplitter()
    assert splitter.push("Open at 9 a.m. ") == []
    assert splitter.push("daily. ") == ["Open at 9 a.m. daily."]


def test_sentences_come_out_as_soon_as_they_end() -> None:
    splitter = SentenceSplitter()
    tokens = [
        "Thanks",
        " for",
        " calling.",
        " This",
        " is",
        " Ava,",
        " how",
        " can",
        " I",
        " help?",
    ]
    out = [splitter.push(t) for t in tokens]
    assert out[2] == ["Thanks for calling."]  # released with its last token
    assert out[-1] == ["This is Ava, how can I help?"]
    assert all(o == [] for i, o in enumerate(out) if i not in (2, len(out) - 1))
    assert splitter.flush() == []


def test_long_first_clause_is_flushed_at_a_comma() -> None:
    text = (
        "I can certainly help you with booking that service appointment for your car, "
        "and I just need a few details first. What day works?"
    )
    assert stream(text, size=4, clause_min_chars=60) == [
        "I can certainly help you with booking that service appointment for your car,",
        "and I just need a few details first.",
        "What day works?",
    ]
    # A short clause is kept whole, and only the opening of a reply is cut at a comma.
    assert stream("Sure, I can help. Well, " + "x" * 70 + ", done.", clause_min_chars=60) == [
        "Sure, I can help.",
        "Well, " + "x" * 70 + ", done.",
    ]


def test_very_long_text_without_punctuation_is_cut() -> None:
    splitter = SentenceSplitter(max_chars=50)
    out = splitter.push("word " * 30)
    assert out and all(len(s) <= 50 for s in out)
    assert " ".join(out + splitter.flush()) == ("word " * 30).strip()
