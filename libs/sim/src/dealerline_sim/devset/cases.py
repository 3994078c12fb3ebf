"""The development set's script: what each caller says, where they pause (``|``), and what
the agent had just asked for (``expects``).

Pause cases are answers a caller gives in pieces: the turn is not over at any ``|``. Most
stop mid-entity (a phone number read in groups) or on a word that trails off ("at", "um");
a few stop where the words so far already read as a complete answer ("it's, um | Maria
Gonzalez" is not, "about ninety thousand | give or take" is): those are the hard ones for
any end-of-turn rule, kept because callers do that too.
"""

from __future__ import annotations

from dealerline_common.speculation import Expects

from .spec import CaseSpec, case, make_vin, spell, spell_groups

VINS = (
    make_vin("1HGCM826?3A004352"),
    make_vin("JTDKB20U?73262215"),
    make_vin("5YJ3E1EA?KF317509"),
    make_vin("1FTFW1E5?NFA28731"),
    make_vin("WBA3A5C5?DF595216"),
)


def _phone_cases() -> list[CaseSpec]:
    return [
        case(
            "pause-phone-01",
            "pause",
            "phone",
            "three one two | eight four seven | two nine five six",
            value="3128472956",
        ),
        case(
            "pause-phone-02",
            "pause",
            "phone",
            "my number is | four one five | six oh two | three three eight one",
            value="4156023381",
        ),
        case(
            "pause-phone-03",
            "pause",
            "phone",
            "it's, um | six one seven | nine two four | oh five five eight",
            value="6179240558",
        ),
        case(
            "pause-phone-04",
            "pause",
            "phone",
            "seven two oh | five five five | one two | three four",
            value="7205551234",
        ),
        case(
            "pause-phone-05",
            "pause",
            "phone",
            "one | four six nine | three eight two | seven seven oh one",
            value="14693827701",
        ),
        case(
            "pause-phone-06",
            "pause",
            "phone",
            "yeah it's two oh six | four four one | nine oh eight seven",
            value="2064419087",
        ),
        case(
            "pause-phone-07",
            "pause",
            "phone",
            "three oh three | eight one eight | six two, um | four nine",
            value="3038186249",
        ),
        case(
            "pause-phone-08",
            "pause",
            "phone",
            "five one two | double seven two | four one oh six",
            value="5127724106",
        ),
        case(
            "pause-phone-09",
            "pause",
            None,
            "oh and my cell is | eight one three | two two seven | oh nine four one",
            value="8132270941",
        ),
        case(
            "pause-phone-10",
            "pause",
            "phone",
            "nine one nine | five four six | three two | seven nine",
            value="9195463279",
        ),
    ]


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
    return [
        case(
            "pause-plate-01", "pause", "plate", "it's | seven K L M | two one four", value="7KLM214"
        ),
        case(
            "pause-plate-02",
            "pause",
            "plate",
            "the plate is | A B C | one two three four",
            value="ABC1234",
        ),
        case("pause-plate-03", "pause", "plate", "um | eight X Y Z | five oh one", value="8XYZ501"),
        case(
            "pause-plate-04", "pause", "plate", "Tango Romeo Kilo | four four two", value="TRK442"
        ),
        case("pause-plate-05", "pause", "plate", "six G | H J | nine nine", value="6GHJ99"),
    ]


def _datetime_cases() -> list[CaseSpec]:
    return [
        case("pause-datetime-01", "pause", "datetime", "next Tuesday, | at nine thirty"),
        case("pause-datetime-02", "pause", "datetime", "um, maybe Thursday | around | two p.m."),
        case("pause-datetime-03", "pause", "datetime", "how about | the twenty third | at ten"),
        case(
            "pause-datetime-04",
            "pause",
            "datetime",
            "tomorrow, uh | tomorrow afternoon around three",
        ),
        case("pause-datetime-05", "pause", "datetime", "let's say | Monday at | eleven fifteen"),
        case(
            "pause-datetime-06",
            "pause",
            "datetime",
            "could I do | Friday the fourteenth | in the morning",
        ),
    ]


def _mileage_cases() -> list[CaseSpec]:
    return [
        case(
            "pause-mileage-01",
            "pause",
            "mileage",
            "about | forty two thousand miles",
            value="42000",
        ),
        case(
            "pause-mileage-02",
            "pause",
            "mileage",
            "it's got, um | sixty one thousand on it",
            value="61000",
        ),
        case(
            "pause-mileage-03",
            "pause",
            "mileage",
            "let me check | it says | thirty eight thousand four hundred",
            value="38400",
        ),
        case(
            "pause-mileage-04",
            "pause",
            "mileage",
            "uh, about ninety thousand | give or take",
            value="90000",
        ),
    ]


def _address_cases() -> list[CaseSpec]:
    return [
        case("pause-address-01", "pause", None, "it's | twelve forty five | Maple Street"),
        case(
            "pause-address-02", "pause", None, "four eighteen | North Oak Avenue, | apartment three"
        ),
        case("pause-address-03", "pause", None, "we're over at | two hundred | Main Street"),
        case("pause-address-04", "pause", None, "um | one oh one | Elm Drive, in Springfield"),
        case("pause-address-05", "pause", None, "the address is | fifty five | Lakeview Road"),
    ]


def _email_cases() -> list[CaseSpec]:
    return [
        case(
            "pause-email-01",
            "pause",
            "email",
            "john dot carter | at gmail dot com",
            value="john.carter@gmail.com",
        ),
        case(
            "pause-email-02",
            "pause",
            "email",
            "it's | m smith eighty two | at yahoo dot com",
            value="msmith82@yahoo.com",
        ),
        case(
            "pause-email-03",
            "pause",
            "email",
            "sarah underscore lee | at outlook | dot com",
            value="sarah_lee@outlook.com",
        ),
        case(
            "pause-email-04",
            "pause",
            "email",
            "d kim | at | hotmail dot com",
            value="dkim@hotmail.com",
        ),
    ]


def _name_cases() -> list[CaseSpec]:
    return [
        case("pause-name-01", "pause", "name", "my name is | uh | David Kim", value="David Kim"),
        case("pause-name-02", "pause", "name", "it's, um | Maria Gonzalez", value="Maria Gonzalez"),
        case("pause-name-03", "pause", "name", "it's | uh | Robert Chen", value="Robert Chen"),
        case("pause-name-04", "pause", "name", "this is, uh | Tom Becker", value="Tom Becker"),
    ]


def _hesitation_cases() -> list[CaseSpec]:
    return [
        case("pause-hesitation-01", "pause", None, "it's, um | the blue one"),
        case(
            "pause-hesitation-02",
            "pause",
            None,
            "I was wondering | if you have | the Civic in stock",
        ),
        case("pause-hesitation-03", "pause", None, "so | my car is making | a weird noise"),
        case(
            "pause-hesitation-04",
            "pause",
            None,
            "I need, uh | an oil change, and | a tire rotation",
        ),
        case(
            "pause-hesitation-05",
            "pause",
            None,
            "can you, um | can you tell me | your hours on Saturday",
        ),
    ]


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
        case("backchannel-02", "backchannel", None, "mm-hmm", phonemes="mhˈm", voice="jm_kumo"),
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
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate case ids in the development set")
    return cases
