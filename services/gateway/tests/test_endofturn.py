"""The end-of-turn decision on recorded timelines, with the test's clock (the driver in
eot_driver.py plays them as 20 ms frames and answers the probes after set latencies). The
times asserted are the simulated clock's, never the wall clock's.
"""

from __future__ import annotations

import pytest
from eot_driver import CFG, T0, Pause, Speech, assert_ends_after_speech, drive

from dealerline_common.speculation import Expects
from dealerline_gateway.endofturn import End, EndOfTurn, EotConfig, Probe
from dealerline_gateway.settings import GatewaySettings

# -- entities spoken in chunks: never cut inside, end soon after the whole answer ----------

CHUNKED = [
    pytest.param(
        "phone",
        [Speech(900, "555"), Pause(800), Speech(900, "555-123"), Pause(900)]
        + [Speech(1200, "555-123-4567.")],
        id="phone-digits",
    ),
    pytest.param(
        "phone",
        [
            Speech(1100, "Five five five."),
            Pause(1000),
            Speech(1000, "Five five five, one two three."),
        ]
        + [Pause(900), Speech(1300, "Five five five, one two three, four five six seven.")],
        id="phone-words",
    ),
    pytest.param(
        "phone",
        [Speech(1000, "Sure, it's"), Pause(700), Speech(900, "Sure, it's 555, 123...")]
        + [Pause(1100), Speech(800, "Sure, it's 555-123-4567.")],
        id="phone-promised",
    ),
    pytest.param(
        None,
        [Speech(1200, "Yeah, my number is 555"), Pause(900)]
        + [Speech(1100, "Yeah, my number is 555-123-4567.")],
        id="phone-volunteered",
    ),
    pytest.param(
        "vin",
        [Speech(1500, "J H M C G 5"), Pause(1000), Speech(1500, "J H M C G 5 6 4 9 2")]
        + [Pause(1100), Speech(1500, "J H M C G 5 6 4 9 2 C 0 0 3 8 9 7.")],
        id="vin-letters",
    ),
    pytest.param(
        "datetime",
        [Speech(800, "Tuesday at"), Pause(900), Speech(700, "Tuesday at nine thirty.")],
        id="datetime-at",
    ),
    pytest.param(
        "email",
        [Speech(1400, "John dot Carter at"), Pause(800)]
        + [Speech(1200, "John dot Carter at Gmail dot com.")],
        id="email",
    ),
]


@pytest.mark.parametrize(("expects", "timeline"), CHUNKED)
def test_an_entity_is_never_cut_and_ends_once_whole(
    expects: Expects | None, timeline: list[Speech | Pause]
) -> None:
    # the model is fooled by the pauses (0.8 everywhere): the words decide
    run = drive(timeline, expects=expects, probs=(0.8,))
    end = assert_ends_after_speech(run)
    assert end.info.reason == "entity_complete"
    assert end.info.expects == (expects or "phone")
    # one probe per pause; the last answers within probe_after + the transcript's latency
    assert len(run.probes) == sum(isinstance(s, Pause) for s in timeline) + 1
    assert run.delay_ms == CFG.probe_after_ms + 380
    assert end.info.silence_ms == run.delay_ms


def test_a_number_cut_at_seven_digits_waits_the_bounded_maximum() -> None:
    run = drive([Speech(1500, "Um, it's 123-4567.")], expects="phone", probs=(0.9,))
    end = assert_ends_after_speech(run)
    assert end.info.reason == "entity_timeout"
    assert end.info.silence_ms == CFG.entity_max_ms
    assert "phone incomplete" in end.why


def test_a_misheard_vin_waits_the_bounded_maximum() -> None:
    run = drive([Speech(3000, "1HGCM82633A004353.")], expects="vin", probs=(0.9,))
    end = assert_ends_after_speech(run)
    assert (end.info.reason, end.info.silence_ms) == ("entity_timeout", CFG.entity_max_ms)


# -- short answers -------------------------------------------------------------------------


def test_yes_ends_when_the_later_of_model_and_words_arrives() -> None:
    words_last = drive(
        [Speech(400, "Yes.")], expects="yes_no", probs=(0.9,), model_ms=60, stt_ms=380
    )
    end = assert_ends_after_speech(words_last)
    assert end.info.reason == "entity_complete"
    assert words_last.delay_ms == CFG.probe_after_ms + 380

    model_last = drive(
        [Speech(400, "Yes.")], expects="yes_no", probs=(0.9,), model_ms=120, stt_ms=40
    )
    end = assert_ends_after_speech(model_last)
    assert end.info.reason == "entity_complete"
    assert end.info.model_prob == 0.9
    assert model_last.delay_ms == CFG.probe_after_ms + 120


def test_the_model_vetoes_a_complete_entity_it_is_strongly_against() -> None:
    run = drive([Speech(2000, "555-123-4567.")], expects="phone", probs=(0.05,))
    end = assert_ends_after_speech(run)
    assert (end.info.reason, end.info.silence_ms) == ("unsure_timeout", CFG.unsure_max_ms)


def test_a_complete_entity_without_a_model_answer_ends_at_the_words_deadline() -> None:
    run = drive([Speech(2000, "555-123-4567.")], expects="phone", probs=(None,))
    end = assert_ends_after_speech(run)
    assert end.info.reason == "entity_complete"
    assert end.info.model_prob is None
    assert end.info.silence_ms == CFG.transcript_wait_ms


# -- no entity expected --------------------------------------------------------------------


def test_no_entity_the_model_ends_a_whole_sentence() -> None:
    run = drive([Speech(1800, "I'd like to book an oil change.")], probs=(0.85,))
    end = assert_ends_after_speech(run)
    assert end.info.reason == "model"
    assert end.info.expects is None
    assert run.delay_ms == CFG.probe_after_ms + 380


def test_an_answer_without_the_entity_asked_for_waits_entity_max() -> None:
    # a misheard answer reads as none ("For the eye on it." for "The VIN is"): the model
    # cannot end it
    other = [Speech(1600, "Actually, can I talk to someone in service?")]
    run = drive(other, expects="phone", probs=(0.8,))
    end = assert_ends_after_speech(run)
    assert (end.info.reason, end.info.silence_ms) == ("entity_timeout", CFG.entity_max_ms)
    assert end.info.expects == "phone"  # what was asked, kept for the record
    assert "no phone in the words" in end.why

    declined = drive([Speech(1200, "No, I'd rather not.")], expects="phone", probs=(0.8,))
    assert assert_ends_after_speech(declined).info.reason == "model"

    design = drive(other, expects="phone", probs=(0.8,), config=EotConfig(unanswered_waits=False))
    assert assert_ends_after_speech(design).info.reason == "model"


def test_the_model_saying_not_done_ends_at_unsure_max() -> None:
    run = drive([Speech(1500, "I was wondering about the recall.")], probs=(0.3,))
    end = assert_ends_after_speech(run)
    assert (end.info.reason, end.info.silence_ms) == ("unsure_timeout", CFG.unsure_max_ms)


def test_trailing_words_wait_even_when_the_model_says_done() -> None:
    run = drive([Speech(700, "It's, um")], probs=(0.7,))
    end = assert_ends_after_speech(run)
    assert (end.info.reason, end.info.silence_ms) == ("unsure_timeout", CFG.entity_max_ms)
    assert "trails off" in end.why

    went_on = drive(
        [Speech(700, "It's, um"), Pause(1500), Speech(1600, "It's, um, the brakes are squeaking.")],
        probs=(0.7,),
    )
    end = assert_ends_after_speech(went_on)
    assert end.info.reason == "model"


# -- answers for a pause the caller spoke through ------------------------------------------


def test_a_late_transcript_for_an_abandoned_pause_is_ignored() -> None:
    # the first pause's words ("Yes.", complete) arrive 380 ms after its probe: the caller
    # has been speaking again for 280 ms, so they must not end the turn
    run = drive(
        [Speech(600, "Yes."), Pause(300), Speech(1400, "Yes. And I also need an oil change.")],
        expects="yes_no",
        probs=(0.9,),
    )
    end = assert_ends_after_speech(run)
    assert run.stale == 1
    assert end.info.reason == "entity_complete"
    assert end.info.silence_ms == run.delay_ms


def test_answers_for_another_pause_return_nothing() -> None:
    eot = EndOfTurn()
    eot.expect("yes_no")
    eot.voiced(T0)
    assert eot.silent(T0 + 0.02) is None
    probe = eot.silent(T0 + 0.2)
    assert isinstance(probe, Probe)
    assert probe.pause_id == eot.pause_id
    eot.voiced(T0 + 0.3)  # the caller goes on: the pause is dropped
    assert eot.pause_id is None
    assert eot.model(probe.pause_id, 0.99, T0 + 0.31) is None
    assert eot.transcript(probe.pause_id, "Yes.", T0 + 0.32) is None
    assert eot.silent(T0 + 0.34) is None
    assert eot.pause_id is not None and eot.pause_id > probe.pause_id
    assert eot.transcript(probe.pause_id, "Yes.", T0 + 0.36) is None  # still stale


# -- without a transcript ------------------------------------------------------------------


def test_no_transcript_falls_back_to_the_model() -> None:
    done = drive([Speech(1200, "That's all, thanks.")], probs=(0.9,), stt_ms=None)
    end = assert_ends_after_speech(done)
    assert (end.info.reason, end.info.silence_ms) == ("no_transcript", CFG.transcript_wait_ms)

    expecting = drive([Speech(1200, "555-123")], expects="phone", probs=(0.2,), stt_ms=None)
    end = assert_ends_after_speech(expecting)
    assert (end.info.reason, end.info.silence_ms) == ("no_transcript", CFG.entity_max_ms)

    nothing = drive([Speech(1200, "Hello?")], probs=(None,), stt_ms=None)
    end = assert_ends_after_speech(nothing)
    assert (end.info.reason, end.info.silence_ms) == ("no_transcript", CFG.transcript_wait_ms)


def test_a_failed_transcript_lets_the_model_decide_at_once() -> None:
    eot = EndOfTurn()
    eot.voiced(T0)
    probe = eot.silent(T0 + 0.2)
    assert isinstance(probe, Probe)
    assert eot.model(probe.pause_id, 0.9, T0 + 0.25) is None  # waits for the words
    end = eot.transcript_failed(probe.pause_id, T0 + 0.3)
    assert isinstance(end, End)
    assert (end.info.reason, end.info.silence_ms) == ("no_transcript", 300.0)

    eot = EndOfTurn()
    eot.expect("phone")
    eot.voiced(T0)
    probe = eot.silent(T0 + 0.2)
    assert isinstance(probe, Probe)
    assert eot.transcript_failed(probe.pause_id, T0 + 0.22) is None  # no model answer yet
    assert eot.model(probe.pause_id, 0.3, T0 + 0.26) is None  # not done: wait the maximum
    assert eot.silent(T0 + 1.98) is None
    end = eot.silent(T0 + 2.0)
    assert isinstance(end, End)
    assert (end.info.reason, end.info.silence_ms) == ("no_transcript", CFG.entity_max_ms)


def test_the_model_alone_may_end_a_turn_when_configured() -> None:
    config = EotConfig(model_alone_prob=0.9)
    sure = drive([Speech(1200, "That's all.")], probs=(0.95,), config=config)
    end = assert_ends_after_speech(sure)
    assert end.info.reason == "model"
    assert sure.delay_ms == config.probe_after_ms + 60

    unsure = drive([Speech(1200, "That's all.")], probs=(0.8,), config=config)
    assert unsure.delay_ms == config.probe_after_ms + 380  # waited for the words

    asked = drive([Speech(1200, "555-123")], expects="phone", probs=(0.95,), config=config)
    end = assert_ends_after_speech(asked)
    assert end.info.reason == "entity_timeout"  # an expected entity always needs the words


# -- lifecycle -----------------------------------------------------------------------------


def test_one_end_per_utterance_until_reset() -> None:
    eot = EndOfTurn()
    first = drive([Speech(1000, "Yes.")], expects="yes_no", probs=(0.9,), eot=eot)
    end = assert_ends_after_speech(first)
    assert eot.ended and eot.pause_id is None
    after = end.at
    assert eot.silent(after + 5.0) is None
    eot.voiced(after + 5.1)
    assert eot.silent(after + 9.0) is None
    assert eot.transcript(first.probes[0].pause_id, "Yes.", after + 9.1) is None

    eot.reset()
    assert eot.expects == "yes_no"  # kept across utterances
    second = drive([Speech(1000, "No.")], expects="yes_no", probs=(0.9,), eot=eot)
    assert_ends_after_speech(second)
    assert second.probes[0].pause_id > first.probes[0].pause_id


def test_a_short_pause_is_not_probed() -> None:
    run = drive(
        [Speech(600, "I need"), Pause(100), Speech(600, "I need new tires."), Pause(180)]
        + [Speech(600, "I need new tires, please.")],
        probs=(0.9,),
    )
    assert len(run.probes) == 1
    assert_ends_after_speech(run)


def test_silence_is_measured_from_the_last_voiced_frame() -> None:
    eot = EndOfTurn(EotConfig(probe_after_ms=200))
    eot.voiced(T0)
    assert eot.silent(T0 + 0.18) is None
    probe = eot.silent(T0 + 0.2)
    assert probe == Probe(1, T0 + 0.2)
    assert eot.silent(T0 + 0.22) is None  # once per pause


@pytest.mark.parametrize(
    "kwargs",
    [
        {"probe_after_ms": -1.0},
        {"unsure_max_ms": 3000.0},  # above entity_max_ms
        {"model_threshold": 1.5},
        {"model_alone_prob": -0.1},
    ],
)
def test_config_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        EotConfig(**kwargs)


def test_without_the_words_a_fooled_model_cuts_the_number() -> None:
    # the control for the cases above: nothing asked for, and Whisper heard nothing
    run = drive([Speech(900, ""), Pause(800), Speech(900, "555-123-4567.")], probs=(0.8,))
    assert run.end is not None
    assert run.ended_in_pause == 1
    assert run.end.info.reason == "no_transcript"


def test_words_ending_on_a_number_wait_when_nothing_is_expected() -> None:
    # devset pause-address-03 as Whisper heard it: the street follows the number
    run = drive(
        [
            Speech(900, "We're over at 200."),
            Pause(1100),
            Speech(900, "We're over at 200 Main Street."),
        ],
        probs=(0.95,),
    )
    end = assert_ends_after_speech(run)
    assert end.info.reason == "model"
    # digits read like a phone number are one, asked for or not
    number = drive(
        [Speech(900, "Oh, and my tell is 813-227."), Pause(1000)]
        + [Speech(900, "Oh, and my tell is 813-227-0941.")],
        probs=(0.95,),
    )
    end = assert_ends_after_speech(number)
    assert (end.info.reason, end.info.expects) == ("entity_complete", "phone")


# -- development-set cases -----------------------------------------------------------------
# Pause cases of libs/sim's development set (dealerline_sim/devset/cases.py), each chunk's
# running transcript written the way Whisper tiny.en writes it. The model is fooled at
# every pause (0.8): the words alone must keep the turn open until the answer is whole.

DEVSET: list[tuple[str, Expects | None, list[str]]] = [
    ("pause-phone-01", "phone", ["312", "312-847", "312-847-2956."]),
    (
        "pause-phone-02",
        "phone",
        ["My number is", "My number is 415", "My number is 415-602", "My number is 415-602-3381."],
    ),
    (
        "pause-phone-03",
        "phone",
        ["It's, um...", "It's, um, 617", "It's, um, 617-924", "It's, um, 617-924-0558."],
    ),
    ("pause-phone-04", "phone", ["720", "720-555", "720-555-12", "720-555-1234."]),
    ("pause-phone-05", "phone", ["1", "1-469", "1-469-382", "1-469-382-7701."]),
    ("pause-phone-07", "phone", ["303", "303-818", "303-818-62, um", "303-818-6249."]),
    ("pause-phone-08", "phone", ["512", "5-1-2, double 7-2", "5-1-2, double 7-2, 4-1-0-6."]),
    (
        "pause-phone-09",
        None,
        [
            "Oh, and my cell is",
            "Oh, and my cell is 813",
            "Oh, and my cell is 813-227",
            "Oh, and my cell is 813-227-0941.",
        ],
    ),
    ("pause-vin-01", "vin", ["1 H G", "1 H G C M 8 2 6 3", "1 H G C M 8 2 6 3 3 A 0 0 4 3 5 2."]),
    (
        "pause-vin-02",
        "vin",
        [
            "The VIN is",
            "The VIN is Juliet, T, D, Kilo, B",
            "The VIN is Juliet, T, D, Kilo, B, 2-0-U-X",
            "The VIN is Juliet, T, D, Kilo, B, 2-0-U-X, 7-3-2-6",
            "The VIN is Juliet, T, D, Kilo, B, 2-0-U-X, 7-3-2-6, 2-2-1-5.",
        ],
    ),
    ("pause-plate-01", "plate", ["It's", "It's 7 K L M", "It's 7 K L M 2 1 4."]),
    ("pause-plate-04", "plate", ["Tango Romeo Kilo", "Tango Romeo Kilo 4 4 2."]),
    ("pause-datetime-01", "datetime", ["Next Tuesday,", "Next Tuesday at 9.30."]),
    (
        "pause-datetime-05",
        "datetime",
        ["Let's say", "Let's say Monday at", "Let's say Monday at 11.15."],
    ),
    ("pause-mileage-01", "mileage", ["About...", "About 42,000 miles."]),
    ("pause-mileage-02", "mileage", ["It's got, um...", "It's got, um, 61,000 on it."]),
    (
        "pause-mileage-03",
        "mileage",
        ["Let me check.", "Let me check. It says", "Let me check. It says 38,400."],
    ),
    ("pause-email-01", "email", ["John dot Carter", "John dot Carter at gmail.com."]),
    (
        "pause-email-03",
        "email",
        [
            "Sarah underscore Lee",
            "Sarah underscore Lee at Outlook",
            "Sarah underscore Lee at Outlook.com.",
        ],
    ),
    ("pause-email-04", "email", ["D Kim", "D Kim at", "D Kim at hotmail.com."]),
    ("pause-name-01", "name", ["My name is", "My name is, uh...", "My name is, uh, David Kim."]),
    ("pause-name-02", "name", ["It's, um...", "It's, um, Maria Gonzalez."]),
    ("pause-name-04", "name", ["This is, uh...", "This is, uh, Tom Becker."]),
    ("pause-hesitation-01", None, ["It's, um...", "It's, um, the blue one."]),
    (
        "pause-hesitation-04",
        None,
        [
            "I need, uh...",
            "I need, uh, an oil change, and",
            "I need, uh, an oil change and a tire rotation.",
        ],
    ),
]


def _timeline(chunks: list[str]) -> list[Speech | Pause]:
    timeline: list[Speech | Pause] = []
    for i, text in enumerate(chunks):
        if i:
            timeline.append(Pause((700, 900, 1100)[i % 3]))
        timeline.append(Speech(260 * len(text.split()) + 200, text))
    return timeline


@pytest.mark.parametrize(("expects", "chunks"), [pytest.param(e, c, id=i) for i, e, c in DEVSET])
def test_devset_pause_cases_are_not_cut_when_the_model_is_fooled(
    expects: Expects | None, chunks: list[str]
) -> None:
    run = drive(_timeline(chunks), expects=expects, probs=(0.8,))
    end = assert_ends_after_speech(run)
    assert end.info.reason in ("entity_complete", "model")
    assert run.delay_ms == CFG.probe_after_ms + 380


def test_a_date_that_may_go_on_needs_the_model() -> None:
    # devset pause-datetime-02: "maybe Thursday" is a whole date; the time follows
    chunks = ["Um, maybe Thursday", "Um, maybe Thursday around", "Um, maybe Thursday around 2 p.m."]
    lenient = EotConfig(open_entity_prob=0.15)  # the plain entity veto
    early = drive(_timeline(chunks), expects="datetime", probs=(0.3, 0.8, 0.9), config=lenient)
    assert early.ended_in_pause == 1  # the date alone ends it, mid answer

    config = EotConfig()  # the default: the model must say done on an open answer
    assert config.open_entity_prob == GatewaySettings.model_fields["eot_open_entity_prob"].default
    run = drive(_timeline(chunks), expects="datetime", probs=(0.3, 0.8, 0.9), config=config)
    end = assert_ends_after_speech(run)
    assert end.info.reason == "entity_complete"

    alone = drive([Speech(900, "Thursday.")], expects="datetime", probs=(0.3,), config=config)
    end = assert_ends_after_speech(alone)
    assert (end.info.reason, end.info.silence_ms) == ("unsure_timeout", CFG.unsure_max_ms)
    # a phone number is not open: the same doubt does not hold it
    number = drive([Speech(2000, "312-847-2956.")], expects="phone", probs=(0.3,), config=config)
    assert assert_ends_after_speech(number).info.reason == "entity_complete"
