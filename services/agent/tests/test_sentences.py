"""The sentence splitter, fed whole texts and token by token."""

from __future__ import annotations

import pytest

from dealerline_agent.sentences import SentenceSplitter, split_sentences


def stream(text: str, size: int = 1, first_clause: bool = True) -> list[str]:
    """Feed ``text`` in pieces of ``size`` characters, as an LLM stream would."""
    splitter = SentenceSplitter(first_clause=first_clause)
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
        ("Tires, e.g. winter ones, are in. Ok.", ["Tires,", "e.g. winter ones, are in.", "Ok."]),
        ("Wait... what? Ok.", ["Wait...", "what?", "Ok."]),
        ("No trailing punctuation", ["No trailing punctuation"]),
        ("The total is $1,250.00 today.", ["The total is $1,250.00 today."]),
        ("It is $1,250, paid. Ok.", ["It is $1,250,", "paid.", "Ok."]),
        ("Open 9:30 to 5: every day.", ["Open 9:30 to 5:", "every day."]),
        ("At 9 a.m., we open. Ok.", ["At 9 a.m.,", "we open.", "Ok."]),
        ("Dr. Smith, our tech, is in.", ["Dr. Smith,", "our tech, is in."]),
        ('"Yes," she said.', ['"Yes,"', "she said."]),
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
        ("Tires, e.g. winter ones, are in. Ok.", ["Tires,", "e.g. winter ones, are in.", "Ok."]),
        ("It is $1,250, paid. Ok.", ["It is $1,250,", "paid.", "Ok."]),
        ("Sure, 1,250 miles. Ok.", ["Sure,", "1,250 miles.", "Ok."]),
        ("We open at 9:30; see you.", ["We open at 9:30;", "see you."]),
        ("Sure I can help, ok.", ["Sure,", "I can help, ok."]),
    ],
)
@pytest.mark.parametrize("size", [1, 2, 3, 7])
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


def test_the_first_clause_goes_out_as_soon_as_its_comma_streams() -> None:
    splitter = SentenceSplitter()
    assert splitter.push("Sure") == []
    assert splitter.push(",") == ["Sure,"]  # no need to see the next token
    assert splitter.push(" I can") == []
    assert splitter.push(" help, gladly.") == ["I can help, gladly."]  # later: whole
    assert splitter.push(" Well, ok.") == ["Well, ok."]
    assert splitter.flush() == []


def test_only_the_first_sentence_is_cut_at_a_clause() -> None:
    text = (
        "I can certainly help you with booking that service appointment for your car, "
        "and I just need a few details first. What day works, morning or afternoon?"
    )
    assert stream(text, size=4) == [
        "I can certainly help you with booking that service appointment for your car,",
        "and I just need a few details first.",
        "What day works, morning or afternoon?",
    ]
    assert stream("Sure, I can help. Well, " + "x" * 70 + ", done.") == [
        "Sure,",
        "I can help.",
        "Well, " + "x" * 70 + ", done.",
    ]
    # A sentence that ends before its first comma is said whole.
    assert stream("Great. Sure, I can help.") == ["Great.", "Sure, I can help."]


def test_a_comma_that_may_belong_to_a_number_waits_for_the_next_token() -> None:
    splitter = SentenceSplitter()
    assert splitter.push("It is 1,") == []
    assert splitter.push("250 dollars, paid") == ["It is 1,250 dollars,"]
    assert splitter.flush() == ["paid"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Sure I can book that for you.", ["Sure,", "I can book that for you."]),
        ("Okay let me check that.", ["Okay,", "let me check that."]),
        ("Of course I'm happy to help.", ["Of course,", "I'm happy to help."]),
        ("Got it so that is Tuesday.", ["Got it,", "so that is Tuesday."]),
        ("Thanks for calling Sunrise Motors.", ["Thanks for calling Sunrise Motors."]),
        ("Great news, it is ready.", ["Great news,", "it is ready."]),
        ("Sure thing.", ["Sure thing."]),
        ("Perfect.", ["Perfect."]),
        ("Sure — I can help. Ok — fine.", ["Sure,", "I can help.", "Ok — fine."]),
        ("Open 9 - 11 daily.", ["Open 9 - 11 daily."]),
    ],
)
@pytest.mark.parametrize("size", [1, 4, 100])
def test_an_opener_is_a_piece_of_its_own(text: str, expected: list[str], size: int) -> None:
    assert stream(text, size=size) == expected
    assert split_sentences(text) == expected


def test_whole_sentences_when_asked() -> None:
    text = "Sure, I can help. Is Tuesday, or Wednesday, better?"
    assert split_sentences(text, first_clause=False) == [
        "Sure, I can help.",
        "Is Tuesday, or Wednesday, better?",
    ]
    assert stream("Sure I can.", first_clause=False) == ["Sure I can."]


def test_very_long_text_without_punctuation_is_cut() -> None:
    splitter = SentenceSplitter(max_chars=50)
    out = splitter.push("word " * 30)
    assert out and all(len(s) <= 50 for s in out)
    assert " ".join(out + splitter.flush()) == ("word " * 30).strip()
