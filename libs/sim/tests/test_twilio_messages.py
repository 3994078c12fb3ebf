"""The simulator's Messages API through the real twilio client: create / fetch / list with
Twilio's resource shape (validated against the official twilio-oai description, vendored subset), the
recorded texts, the request checks and their error codes, auth, and the outage switch."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema
import pytest
from sim_twilio_kit import DEALER, TOKEN
from twilio.base.exceptions import TwilioRestException

from dealerline_sim import twilio_schema
from dealerline_sim.twilio_rest import TwilioSim

CUSTOMER = "+14155550142"


def validate_message(body: dict[str, Any]) -> None:
    schema = twilio_schema.resource_schema(twilio_schema.MESSAGE)
    jsonschema.Draft202012Validator(schema).validate(body)


def validate_page(body: dict[str, Any]) -> None:
    schema = twilio_schema.resource_schema("ListMessageResponse")
    jsonschema.Draft202012Validator(schema).validate(body)


async def rest(tw: TwilioSim, method: str, path: str, **kw: Any) -> httpx.Response:
    auth = kw.pop("auth", (tw.account_sid, tw.auth_token))
    async with httpx.AsyncClient(base_url=tw.rest_url, trust_env=False) as http:
        return await http.request(
            method, f"/2010-04-01/Accounts/{tw.account_sid}{path}", auth=auth, **kw
        )


async def test_create_fetch_list_through_the_twilio_client(tw: TwilioSim) -> None:
    client = tw.twilio_client(async_http=True)
    sent = await client.messages.create_async(to=CUSTOMER, from_=DEALER, body="Hello there")
    assert sent.sid.startswith("SM")
    assert sent.status == "queued"
    assert (sent.to, sent.from_, sent.body) == (CUSTOMER, DEALER, "Hello there")
    assert [(m.sid, m.to, m.from_, m.body) for m in tw.messages] == [
        (sent.sid, CUSTOMER, DEALER, "Hello there")
    ]
    await client.messages.create_async(to="+14155550143", from_=DEALER, body="Other")

    fetched = await client.messages(sent.sid).fetch_async()
    assert (fetched.sid, fetched.body) == (sent.sid, "Hello there")
    listed = await client.messages.list_async(to=CUSTOMER)
    assert [m.sid for m in listed] == [sent.sid]
    assert len(await client.messages.list_async()) == 2
    assert [m.sid for m in tw.messages_to(CUSTOMER)] == [sent.sid]
    assert tw.events("message", sid=sent.sid)


async def test_answers_match_the_twilio_oai_schema(tw: TwilioSim) -> None:
    resp = await rest(
        tw, "POST", "/Messages.json", data={"To": CUSTOMER, "From": DEALER, "Body": "✓" * 71}
    )
    assert resp.status_code == 201
    body = resp.json()
    validate_message(body)
    assert body["num_segments"] == "2"  # UCS-2: 70 characters a segment
    fetched = await rest(tw, "GET", f"/Messages/{body['sid']}.json")
    assert fetched.status_code == 200
    validate_message(fetched.json())
    page = await rest(tw, "GET", "/Messages.json", params={"To": CUSTOMER})
    validate_page(page.json())
    assert [m["sid"] for m in page.json()["messages"]] == [body["sid"]]
    bad_sid = "SM" + "0" * 32
    missing = await rest(tw, "GET", f"/Messages/{bad_sid}.json")
    assert (missing.status_code, missing.json()["code"]) == (404, 20404)


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"From": DEALER, "Body": "x"}, 21604),
        ({"To": CUSTOMER, "Body": "x"}, 21603),
        ({"To": CUSTOMER, "From": DEALER}, 21602),
        ({"To": "415-555-0142", "From": DEALER, "Body": "x"}, 21211),
        ({"To": CUSTOMER, "From": "dealer", "Body": "x"}, 21212),
        ({"To": CUSTOMER, "From": DEALER, "Body": "x" * 1601}, 21617),
    ],
)
async def test_bad_requests_are_refused_with_twilio_codes(
    tw: TwilioSim, form: dict[str, str], code: int
) -> None:
    resp = await rest(tw, "POST", "/Messages.json", data=form)
    assert resp.status_code == 400
    assert resp.json()["code"] == code
    assert tw.messages == []


async def test_auth_and_owned_numbers() -> None:
    async with TwilioSim(TOKEN, owned_numbers=[DEALER]) as tw:
        form = {"To": CUSTOMER, "From": DEALER, "Body": "x"}
        wrong = await rest(tw, "POST", "/Messages.json", data=form, auth=(tw.account_sid, "no"))
        assert (wrong.status_code, wrong.json()["code"]) == (401, 20003)
        other = await rest(tw, "POST", "/Messages.json", data={**form, "From": "+14155550100"})
        assert (other.status_code, other.json()["code"]) == (400, 21606)
        ok = await rest(tw, "POST", "/Messages.json", data=form)
        assert ok.status_code == 201
        assert len(tw.messages) == 1


async def test_outage_switch_fails_creates_then_heals(tw: TwilioSim) -> None:
    client = tw.twilio_client(async_http=True)
    tw.fail_messages(times=2)
    for _ in range(2):
        with pytest.raises(TwilioRestException) as info:
            await client.messages.create_async(to=CUSTOMER, from_=DEALER, body="x")
        assert info.value.status == 503
    assert tw.messages == []
    await client.messages.create_async(to=CUSTOMER, from_=DEALER, body="after")
    tw.fail_messages()
    for _ in range(3):
        with pytest.raises(TwilioRestException):
            await client.messages.create_async(to=CUSTOMER, from_=DEALER, body="down")
    tw.heal_messages()
    await client.messages.create_async(to=CUSTOMER, from_=DEALER, body="up")
    assert [m.body for m in await tw.wait_for_messages(2, to=CUSTOMER)] == ["after", "up"]
