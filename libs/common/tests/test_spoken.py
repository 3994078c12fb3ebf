"""Spoken digits, number words and spelled letters as Whisper writes them."""

from __future__ import annotations

import pytest

from dealerline_common.spoken import code_runs, lex, normalize_spoken, tokens


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("My number is five five five, one two three.", "my number is 555123"),
        ("555-123-4567", "5551234567"),
        ("5-5-5, 1-2-3.", "555123"),
        ("Five fifty five, oh one two.", "555012"),
        ("double five, triple seven", "55777"),
        ("512, double 722.", "5127722"),
        ("it's oh seven", "it's 07"),
        ("Oh, five five five", "oh 555"),
        ("twenty three hundred", "2300"),
        ("nineteen ninety nine", "1999"),
        ("fifty-five", "55"),
        ("two thousand and five", "2005"),
        ("forty two thousand miles", "42000 miles"),
        ("a hundred and twenty thousand", "120000"),
        ("about 60k", "about 60000"),
        ("42,000 miles", "42000 miles"),
        ("J H M, C G five six", "JHMCG56"),
        ("j-h-m", "JHM"),
        ("J. H. M.", "JHM"),
        ("Juliet Hotel Mike", "JHM"),
        ("My name is Mike.", "my name is mike"),  # one NATO word alone is a word
        ("B as in boy, 7", "B7"),
        ("the twenty first", "the 21st"),
        ("March 3rd at 9 a.m.", "march 3rd at 9 am"),
        ("10:30 PM", "10:30 pm"),
        ("I have 2 cars", "i have 2 cars"),
        ("[BLANK_AUDIO]", ""),
    ],
)
def test_normalize_spoken(text: str, want: str) -> None:
    assert normalize_spoken(text) == want


def test_tokens_fold_number_words_with_values() -> None:
    nums = [
        (t.text, t.value, t.spoken) for t in tokens("five fifty five, 42,000") if t.kind == "num"
    ]
    assert nums == [("5", 5, True), ("55", 55, True), ("42000", 42000, False)]


def test_lex_marks_unspaced_tokens() -> None:
    toks = lex("gmail.com. Next")
    assert [(t.text, t.spaced) for t in toks] == [
        ("gmail", True),
        (".", False),
        ("com", False),
        (".", False),
        ("next", True),
    ]


def test_code_runs_span_separators_and_fillers() -> None:
    runs = code_runs(tokens("It's J H M, um, C G 5 6 and then my name"))
    assert [(r.chars, r.items) for r in runs] == [("JHMCG56", 7)]
