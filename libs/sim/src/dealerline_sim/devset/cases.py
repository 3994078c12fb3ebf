"""The development set's script: what each caller says, where they pause (``|``), and what
the agent had just asked for (``expects``).

Pause cases are answers a caller gives in pieces: the turn is not over at any ``|``. Most
stop mid-entity (a phone number read in groups) or on a word that trails off ("at", "um");
a few stop where the words so far already read as a complete answer ("it's, um | Maria
Gonzalez" is not, "about ninety thousand | give or take" is): those are the hard ones for
any end-of-turn rule, kept because callers do that too.
"""

from __future__ import annotations

import dataclasses

from dealerline_common.speculation import Expects

from .spec import CaseSpec, case, make_vin, spell, spell_groups

VINS = (
    make_vin("1HGCM826?3A004352"),
    make_vin("JTDKB20U?73262215"),
    make_vin("5YJ3E1EA?KF317509"),
    make_vin("1FTFW1E5?NFA28731"),
    make_vin("WBA3A5C5?DF595216"),
)


Row = tuple[Expects | None, str, str | None]  # expects, what is said ("|" pauses), value


def _numbered(group: str, rows: list[Row]) -> list[CaseSpec]:
    """Pause cases ``pause-<group>-01``… from their rows."""
    return [
        case(f"pause-{group}-{i:02d}", "pause", expects, said, value=value)
        for i, (expects, said, value) in enumerate(rows, start=1)
    ]


def _phone_cases() -> list[CaseSpec]:
    return _numbered(
        "phone",
        [
            ("phone", "three one two | eight four seven | two nine five six", "3128472956"),
            (
                "phone",
                "my number is | four one five | six oh two | three three eight one",
                "4156023381",
            ),
            (
                "phone",
                "it's, um | six one seven | nine two four | oh five five eight",
                "6179240558",
            ),
            ("phone", "seven two oh | five five five | one two | three four", "7205551234"),
            ("phone", "one | four six nine | three eight two | seven seven oh one", "14693827701"),
            ("phone", "yeah it's two oh six | four four one | nine oh eight seven", "2064419087"),
            ("phone", "three oh three | eight one eight | six two, um | four nine", "3038186249"),
            ("phone", "five one two | double seven two | four one oh six", "5127724106"),
            (
                None,
                "oh and my cell is | eight one three | two two seven | oh nine four one",
                "8132270941",
            ),
            ("phone", "nine one nine | five four six | three two | seven nine", "9195463279"),
        ],
    )


def _vin_cases() -> list[CaseSpec]:
    v1, v2, v3, v4, v5 = VINS
    return [
        case("pause-vin-01", "pause", "vin", spell_groups(v1, (3, 6, 8)), value=v1),
        case(
            "pause-vin-02",
            "pause",
            "vin",
            ["the VIN is", *spell_groups(v2, (5, 4, 4, 4), nato="JK")],
            value=v2,
        ),
        case(
            "pause-vin-03",
            "pause",
            "vin",
            [f"okay, it's {spell(v3[:3])}", *spell_groups(v3[3:], (5, 3, 6))],
            value=v3,
        ),
        case("pause-vin-04", "pause", "vin", spell_groups(v4, (4, 4, 3, 6), nato="FW"), value=v4),
        case("pause-vin-05", "pause", "vin", ["um", *spell_groups(v5, (3, 6, 4, 4))], value=v5),
    ]


def _plate_cases() -> list[CaseSpec]:
    return _numbered(
        "plate",
        [
            ("plate", "it's | seven K L M | two one four", "7KLM214"),
            ("plate", "the plate is | A B C | one two three four", "ABC1234"),
            ("plate", "um | eight X Y Z | five oh one", "8XYZ501"),
            ("plate", "Tango Romeo Kilo | four four two", "TRK442"),
            ("plate", "six G | H J | nine nine", "6GHJ99"),
        ],
    )


def _datetime_cases() -> list[CaseSpec]:
    return _numbered(
        "datetime",
        [
            ("datetime", "next Tuesday, | at nine thirty", None),
            ("datetime", "um, maybe Thursday | around | two p.m.", None),
            ("datetime", "how about | the twenty third | at ten", None),
            ("datetime", "tomorrow, uh | tomorrow afternoon around three", None),
            ("datetime", "let's say | Monday at | eleven fifteen", None),
            ("datetime", "could I do | Friday the fourteenth | in the morning", None),
        ],
    )


def _mileage_cases() -> list[CaseSpec]:
    return _numbered(
        "mileage",
        [
            ("mileage", "about | forty two thousand miles", "42000"),
            ("mileage", "it's got, um | sixty one thousand on it", "61000"),
            ("mileage", "let me check | it says | thirty eight thousand four hundred", "38400"),
            ("mileage", "uh, about ninety thousand | give or take", "90000"),
        ],
    )


def _address_cases() -> list[CaseSpec]:
    return _numbered(
        "address",
        [
            (None, "it's | twelve forty five | Maple Street", None),
            (None, "four eighteen | North Oak Avenue, | apartment three", None),
            (None, "we're over at | two hundred | Main Street", None),
            (None, "um | one oh one | Elm Drive, in Springfield", None),
            (None, "the address is | fifty five | Lakeview Road", None),
        ],
    )


def _email_cases() -> list[CaseSpec]:
    return _numbered(
        "email",
        [
            ("email", "john dot carter | at gmail dot com", "john.carter@gmail.com"),
            ("email", "it's | m smith eighty two | at yahoo dot com", "msmith82@yahoo.com"),
            ("email", "sarah underscore lee | at outlook | dot com", "sarah_lee@outlook.com"),
            ("email", "d kim | at | hotmail dot com", "dkim@hotmail.com"),
        ],
    )


def _name_cases() -> list[CaseSpec]:
    return _numbered(
        "name",
        [
            ("name", "my name is | uh | David Kim", "David Kim"),
            ("name", "it's, um | Maria Gonzalez", "Maria Gonzalez"),
            ("name", "it's | uh | Robert Chen", "Robert Chen"),
            ("name", "this is, uh | Tom Becker", "Tom Becker"),
        ],
    )


def _hesitation_cases() -> list[CaseSpec]:
    return _numbered(
        "hesitation",
        [
            (None, "it's, um | the blue one", None),
            (None, "I was wondering | if you have | the Civic in stock", None),
            (None, "so | my car is making | a weird noise", None),
            (None, "I need, uh | an oil change, and | a tire rotation", None),
            (None, "can you, um | can you tell me | your hours on Saturday", None),
        ],
    )


def _short_cases() -> list[CaseSpec]:
    said: list[tuple[str, Expects | None]] = [
        ("yes", "yes_no"),
        ("yeah, that's right", "yes_no"),
        ("no thanks", "yes_no"),
        ("nope", "yes_no"),
        ("that's correct", "yes_no"),
        ("sure", "yes_no"),
        ("no, that's it", "yes_no"),
        ("yes please", "yes_no"),
        ("Tuesday works", "datetime"),
        ("nine a.m.", "datetime"),
        ("tomorrow at ten", "datetime"),
        ("noon is fine", "datetime"),
        ("Friday afternoon", "datetime"),
        ("bye", None),
        ("thank you, bye", None),
        ("that's all, thanks", None),
        ("the blue one", None),
        ("okay, sounds good", None),
    ]
    return [
        case(f"short-{i:02d}", "short", expects, text)
        for i, (text, expects) in enumerate(said, start=1)
    ]


def _backchannel_cases() -> list[CaseSpec]:
    said = [
        "okay",
        "yeah",
        "right",
        "sure",
        "got it",
        "I see",
        "oh, okay",
        "yep",
        "alright",
        "yeah, yeah",
    ]
    cases = [
        case("backchannel-01", "backchannel", None, "uh-huh", phonemes="əhˈʌ", voice="jf_tebukuro"),
        case("backchannel-02", "backchannel", None, "mm-hmm", phonemes="ʌmhˈʌm"),
    ]
    cases += [
        case(f"backchannel-{i:02d}", "backchannel", None, text)
        for i, text in enumerate(said, start=3)
    ]
    return cases


def _interruption_cases() -> list[CaseSpec]:
    said = [
        "wait",
        "no, Tuesday",
        "hold on",
        "actually, can I ask something?",
        "sorry, what was that?",
        "no no, the other one",
        "how much is an oil change?",
        "wait, that's not right",
        "can I talk to a person?",
        "hang on a second",
        "no, I said Thursday",
        "do you have it in red?",
    ]
    return [
        case(f"interruption-{i:02d}", "interruption", None, text)
        for i, text in enumerate(said, start=1)
    ]


# Short clips whose drawn voice Kokoro misread (Whisper could not recover the words even
# from the clean clip: "sure" came out as "sewer", "wait" as "Blake"): the voice (and
# speed) that `python -m dealerline_sim.devset check` found to say them.
PINS: dict[str, tuple[str, float | None]] = {
    "short-06": ("jf_gongitsune", None),
    "short-12": ("jm_kumo", None),
    "backchannel-02": ("jf_tebukuro", 0.9),
    "backchannel-04": ("jf_alpha", None),
    "backchannel-06": ("jf_gongitsune", None),
    "backchannel-08": ("jf_tebukuro", None),
    "interruption-01": ("jf_gongitsune", None),
    "interruption-11": ("jm_kumo", None),
    "interruption-12": ("jf_nezumi", None),
}


def _pinned(spec: CaseSpec) -> CaseSpec:
    pin = PINS.get(spec.id)
    if pin is None:
        return spec
    return dataclasses.replace(spec, voice=pin[0], speed=pin[1] if pin[1] else spec.speed)


def all_cases() -> list[CaseSpec]:
    """Every case of the set, in a fixed order (ids are unique)."""
    cases = [
        *_phone_cases(),
        *_vin_cases(),
        *_plate_cases(),
        *_datetime_cases(),
        *_mileage_cases(),
        *_address_cases(),
        *_email_cases(),
        *_name_cases(),
        *_hesitation_cases(),
        *_short_cases(),
        *_backchannel_cases(),
        *_interruption_cases(),
    ]
    ids = [c.id for c in cases]
    if len(set(ids)) != len(ids) or not set(PINS) <= set(ids):
        raise ValueError("duplicate case ids, or a pin for no case, in the development set")
    return [_pinned(c) for c in cases]
