"""Unit tests of the Twilio simulator's parts: TwiML parsing, the simulated clock and
timeline, webhook routing and signing, the vendored twilio-oai schemas."""

from __future__ import annotations

import asyncio
import email.utils
from datetime import UTC, datetime

import jsonschema
import pytest
from twilio.request_validator import RequestValidator

from dealerline_sim.callbacks import Callback, Faults, WebhookClient
from dealerline_sim.humans import HumanScript
from dealerline_sim.legs import format_number
from dealerline_sim.timeline import SimClock, Timeline
from dealerline_sim.twilio_schema import CALL, resource_schema, schema_names
from dealerline_sim.twiml import TwimlError, parse_twiml, stream_instruction


def test_parse_twiml_reads_verbs_nouns_and_attributes() -> None:
    verbs = parse_twiml(
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        '<Gather numDigits="1" action="/a" finishOnKey=""><Say voice="alice"> Press a key </Say>'
        "</Gather><Hangup/>"
        '<Dial action="/d"><Conference endConferenceOnExit="true">support_1</Conference></Dial>'
        "</Response>"
    )
    assert [v.tag for v in verbs] == ["Gather", "Hangup", "Dial"]
    gather = verbs[0]
    assert gather.attrs == {"numDigits": "1", "action": "/a", "finishOnKey": ""}
    assert gather.children[0].text == "Press a key"
    assert gather.children[0].attr("voice") == "alice"
    assert gather.number_attr("numDigits", 0) == 1
    conf = verbs[2].children[0]
    assert conf.text == "support_1"
    assert conf.bool_attr("endConferenceOnExit", False) is True
    assert conf.bool_attr("startConferenceOnEnter", True) is True


@pytest.mark.parametrize(
    ("twiml", "fragment"),
    [
        ("<Response><Say>x</Say>", "well-formed"),
        ("<Document/>", "root"),
        ("<Response><Dance/></Response>", "not a TwiML verb"),
        ("<Response><Gather><Dial>1</Dial></Gather></Response>", "may nest only"),
        ("<Response><Dial></Dial></Response>", "neither a number"),
        ("<Response><Dial><Conference/></Dial></Response>", "room name"),
        ("<Response><Dial><Party>x</Party></Dial></Response>", "not a <Dial> noun"),
    ],
)
def test_parse_twiml_refuses_what_twilio_refuses(twiml: str, fragment: str) -> None:
    with pytest.raises(TwimlError, match=fragment):
        parse_twiml(twiml)


def test_stream_instruction_checks_the_stream() -> None:
    ok = parse_twiml(
        '<Response><Connect action="/next"><Stream url="wss://a.example.com/s">'
        '<Parameter name="k" value="v"/></Stream></Connect></Response>'
    )[0]
    instruction = stream_instruction(ok)
    assert instruction.url == "wss://a.example.com/s"
    assert instruction.parameters == {"k": "v"}
    assert instruction.connect_attributes == {"action": "/next"}
    bad = parse_twiml(
        '<Response><Connect><Stream url="ws://a.example.com/s"/></Connect></Response>'
    )
    with pytest.raises(TwimlError, match="wss://"):
        stream_instruction(bad[0])


def test_sim_clock_scales_and_formats() -> None:
    clock = SimClock(0.01, epoch=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert clock.wall(45) == pytest.approx(0.45)
    assert clock.rfc2822(0.0) == "Fri, 02 Jan 2026 03:04:05 +0000"
    assert email.utils.parsedate_to_datetime(clock.rfc2822(61.0)) == datetime(
        2026, 1, 2, 3, 5, 6, tzinfo=UTC
    )
    with pytest.raises(ValueError):
        SimClock(0)


async def test_timeline_waits_and_times_out() -> None:
    timeline = Timeline(SimClock(0.01))

    async def later() -> None:
        await asyncio.sleep(0.02)
        timeline.record("status", "CA1", status="ringing")

    task = asyncio.create_task(later())
    event = await timeline.wait_for_event("status", "CA1", status="ringing", timeout_s=2)
    await task
    assert event.index == 0
    assert event.get("status") == "ringing"
    assert timeline.select("status", status="busy") == []
    with pytest.raises(TimeoutError, match="busy"):
        await timeline.wait_for_event("status", status="busy", timeout_s=0.05)


def test_webhook_routes_and_signatures() -> None:
    client = WebhookClient("secret")
    client.add_route("https://esc.example.com", "http://127.0.0.1:9000")
    client.add_route("https://esc.example.com/deep", "http://127.0.0.1:9001/x")
    assert client.local_url("https://esc.example.com/a?b=1") == "http://127.0.0.1:9000/a?b=1"
    assert client.local_url("https://esc.example.com/deep/z") == "http://127.0.0.1:9001/x/z"
    assert client.local_url("https://esc.example.company/a") == "https://esc.example.company/a"
    assert client.local_url("http://127.0.0.1:5/a") == "http://127.0.0.1:5/a"
    params = {"CallSid": "CA1", "Digits": "1"}
    sig = client.sign("https://esc.example.com/a?b=1", params)
    assert RequestValidator("secret").validate("https://esc.example.com/a?b=1", params, sig)
    # Twilio's published example vector for the request signature
    assert (
        WebhookClient("12345").sign(
            "https://mycompany.com/myapp.php?foo=1&bar=2",
            {
                "CallSid": "CA1234567890ABCDE",
                "Caller": "+14158675309",
                "Digits": "1234",
                "From": "+14158675309",
                "To": "+18005551212",
            },
        )
        == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    )


def test_fault_rules_match_and_count() -> None:
    faults = Faults()
    rule = faults.drop(status="completed", call_sid="CA1", times=2)
    cb = Callback("call", "CA1", "https://x/y", "POST", {}, "completed", 3, "CA1", "+1")
    other = Callback("call", "CA2", "https://x/y", "POST", {}, "completed", 3, "CA2", "+1")
    assert faults.take(other) is None
    assert faults.take(cb) is rule
    assert faults.take(cb) is rule
    assert faults.take(cb) is None  # used up
    with pytest.raises(ValueError):
        faults.duplicate(copies=1)
    with pytest.raises(ValueError):
        faults.delay(-1)
    with pytest.raises(ValueError):
        faults.reorder(times=0)


def test_numbers_format_like_twilio() -> None:
    assert format_number("+14155550123") == "(415) 555-0123"
    assert format_number("+442071838750") == "+442071838750"
    assert format_number("client:bob") == "client:bob"


def test_human_script_keys() -> None:
    script = HumanScript.accepts_then_hangs_up(talk_s=10, first="9")
    assert script.keys_for(0) == "9"
    assert script.keys_for(1) == "1"
    assert script.keys_for(2) is None
    assert script.with_(ring_s=7).ring_s == 7
    assert HumanScript.call_screening().keys_for(0) is None


def test_vendored_schemas_convert_nullable_and_refs() -> None:
    assert CALL in schema_names()
    schema = resource_schema(CALL)
    assert schema["properties"]["price"]["type"] == ["string", "null"]
    assert schema["properties"]["status"] == {"$ref": "#/$defs/call_enum_status"}
    validator = jsonschema.Draft202012Validator(schema)
    example: dict[str, str | None] = {name: None for name in schema["properties"]}
    example["status"] = "queued"
    validator.validate(example)
    example["status"] = "initiated"  # not a REST status
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(example)
    example["status"] = "queued"
    example["sid"] = "XX" + "0" * 32
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(example)
    del example["sid"]
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(example)  # strict: every property is present
    with pytest.raises(KeyError):
        resource_schema("api.v2010.account.recording")
