"""The words the entity judge (:mod:`dealerline_common.entities`) reads: what ends an
unfinished phrase, what agrees or stalls, yes and no, and the vocabulary of dates, times,
mileage, plates and phone numbers. Data only."""

from __future__ import annotations

from .spoken import FILLERS

# Words that end an unfinished phrase: conjunctions, articles, possessives, the copula,
# and prepositions that rarely end an English sentence.
DANGLING = frozenset(
    {"and", "or", "but", "nor", "plus", "because", "cause", "'cause", "if", "than"}
    | {"the", "a", "an", "my", "your", "our", "their", "its"}
    | {"to", "at", "of", "with", "from", "into", "onto", "is", "like"}
    | {"it's", "that's", "there's", "here's", "what's", "i'm", "we're", "they're", "you're"}
    | {"i'll", "we'll", "i'd", "we'd", "i've", "um", "uh"}
)

# A turn that is only one of these has not started yet ("So", "Well").
OPENERS = frozenset({"so", "well", "and", "but", "okay so", "anyway", "actually", "basically"})

# What may end a question without leaving it unfinished ("What's it for?" is whole).
QUESTION_DANGLING = frozenset(
    {"and", "or", "but", "nor", "because", "cause", "if", "the", "a", "an", "my", "your"}
)

# Agreeing to answer without answering yet ("Sure, it's", "Yeah, hold on").
STALL = frozenset(
    {"sure", "yeah", "yes", "yep", "yup", "ya", "okay", "ok", "alright", "right", "well"}
    | {"certainly", "absolutely", "of", "course", "so", "oh", "uhhuh", "mhm", "let", "me"}
    | {"check", "see", "find", "get", "grab", "look", "pull", "up", "it", "hold", "on", "one"}
    | {"sec", "second", "moment", "minute", "just", "a", "bear", "with", "hang", "give"}
    | {"wait", "it's", "is", "that's", "the", "my", "i", "i'm", "i've", "got", "have", "here"}
    | {"think", "number", "name", "vin", "email", "address", "plate", "mileage", "phone"}
    | {"cell", "license", "your", "you", "for", "ready", "there", "that", "let's", "um"}
    | {"this", "speaking", "hi", "hello", "hey", "call", "am"}
)

YES = frozenset(
    {"yes", "yeah", "yep", "yup", "ya", "yea", "sure", "correct", "right", "absolutely"}
    | {"definitely", "certainly", "okay", "ok", "alright", "affirmative", "perfect"}
    | {"great", "uhhuh", "mhm", "please", "exactly", "indeed", "course", "fine", "good"}
)

NO = frozenset(
    {"no", "nope", "nah", "negative", "not", "don't", "never", "wrong", "incorrect", "nothing"}
)

NOT_PHONE = frozenset(
    {"vin", "plate", "tag", "license", "account", "policy", "stock", "order", "claim"}
    | {"confirmation", "serial", "part", "model", "reference", "case", "ticket", "room"}
    | {"your", "wrong", "same", "what"}
)

# A number after these ends what it numbers: "apartment 3", "room 12".
NUMBERED = frozenset(
    {"apartment", "apt", "suite", "unit", "room", "floor", "number", "no", "gate", "exit"}
    | {"route", "highway", "interstate", "bay", "lane", "door", "building", "lot", "#"}
)

DECLINE = NO | {"rather", "sorry", "know", "dunno", "can't", "cannot", "won't"}

PHONE_GLUE = frozenset({"area", "code", "dash", "hyphen", "then", "plus", "and"}) | FILLERS

PLATE_CUES = frozenset({"plate", "plates", "tag", "tags", "license", "registration"})

WEEKDAYS = frozenset(
    f"{d}{s}"
    for d in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    for s in ("", "s")
)

MONTHS = frozenset(
    {"january", "february", "march", "april", "may", "june", "july", "august"}
    | {"september", "october", "november", "december"}
)

DAY_WORDS = frozenset(
    {"today", "tomorrow", "tonight", "weekend", "morning", "afternoon", "evening", "noon"}
    | {"midnight", "lunch", "lunchtime", "midday", "o'clock", "asap", "now", "tonight"}
)

RELATIVE = frozenset({"day", "days", "week", "weeks", "month", "months", "hour", "hours"})

DATE_DANGLING = frozenset(
    {"next", "this", "on", "around", "about", "by", "before", "after", "between", "until"}
    | {"till", "til", "in", "maybe", "or", "half", "quarter", "past", "like", "say"}
)

MONTH_SPANS = frozenset({"in", "of", "early", "late", "mid", "end", "all"})

# Words before a number that make it a time or a day: "at 9", "around 2", "the 14".
NUMBER_LEADS = frozenset(
    {"at", "around", "about", "by", "before", "after", "until", "till", "from", "to", "the"}
    | {"like", "say", "maybe", "or", "and", "past", "half", "quarter", "in", "on"}
    | WEEKDAYS
)

NUMBER_TAILS = frozenset({"am", "pm", "o'clock", "oclock", "ish", "sharp", "o"}) | RELATIVE

MILES = frozenset({"miles", "mile", "mi", "k", "thousand", "km", "kilometers"})

MILEAGE_DANGLING = frozenset(
    {"about", "around", "roughly", "approximately", "over", "under", "almost", "nearly"}
    | {"just", "maybe", "says", "reads", "shows"}
)

COMMON_TLDS = frozenset(
    {"com", "net", "org", "edu", "gov", "us", "io", "co", "info", "biz", "me", "ca", "uk"}
)
