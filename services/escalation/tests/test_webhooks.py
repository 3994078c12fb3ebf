"""The human-leg webhooks over real HTTP: the TwiML of each, and a forged, missing or
misplaced signature answered with 403 on every one of them."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from esc_testkit import (
    PUBLIC_URL,
    Running,
    TwilioSide,
    request,
    running_service,
    seed_session,
    sign,
    status_log,
)

from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.local_nats import NatsServer
from dealerline_common.messages import HumanCallStatus
from dealerline_escalation.webhooks import (
    ANSWER_PROMPT,
    CALL_OVER,
    CONNECTING,
    CUSTOMER_GONE,
    DECLINED,
    NOT_NEEDED,
)

S = HumanCallStatus
SID = "sess_hooks"
ROUTES = ["human-answer", "human-detected", "human-confirmed", "human-status", "conference-status"]


def verbs(twiml: str) -> list[ET.Element]:
    root = ET.fromstring(twiml)
    assert root.tag == "Response"
    return list(root)


async def _ringing(run: Running, client: Bus, customer_name: str | None = "Dana Smith") -> str:
    await seed_session(run.store, SID, customer_name)
    log = await status_log(client, SID)
    await client.publish_durable(subjects.ESCALATION_REQUEST, request(SID), msg_id="task_1")
    call = await run.calls.created_call(1)
    await log.wait_for(S.CALLING)
    run.calls.statuses[call["sid"]] = "in-progress"
    return str(call["sid"])


async def test_each_step_answers_the_right_twiml(nats_server: NatsServer, client: Bus) -> None:
    async with running_service(nats_server.url) as run:
        human = await _ringing(run, client)
        tw = run.twilio(SID)

        answer = await tw.answer(1, human)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("application/xml")
        gather, hangup = verbs(answer.text)
        assert gather.tag == "Gather" and hangup.tag == "Hangup"
        assert gather.attrib["numDigits"] == "1"
        assert gather.attrib["timeout"] == "10"
        assert gather.attrib["finishOnKey"] == ""
        assert gather.attrib["action"] == (
            f"{PUBLIC_URL}/api/voice/human-detected?session_id={SID}&task_id=task_1&attempt=1"
        )
        assert gather.findtext("Say") == ANSWER_PROMPT

        no_digits = await tw.post(
            "human-detected", tw.call_params(human), tw.query(1)
        )  # Twilio only calls the action with digits; be safe if it does not
        assert [v.tag for v in verbs(no_digits.text)] == ["Say", "Hangup"]

        detected = await tw.detected(1, human, "7")
        gather, say, hangup = verbs(detected.text)
        assert gather.tag == "Gather" and say.tag == "Say" and hangup.tag == "Hangup"
        assert gather.attrib["action"].startswith(f"{PUBLIC_URL}/api/voice/human-confirmed?")
        assert gather.attrib["numDigits"] == "1"
        assert gather.findtext("Say") == (
            "You have an incoming customer call. Dana Smith needs help with a trade-in offer "
            "on a 2019 Civic. Press 1 to accept, or any other key to decline."
        )

        confirmed = await tw.confirmed(1, human, "1")
        say, dial, after = verbs(confirmed.text)
        assert say.text == CONNECTING and after.text == CALL_OVER
        conference = dial.find("Conference")
        assert conference is not None
        assert conference.text == f"support_{SID}"
        assert conference.attrib["startConferenceOnEnter"] == "true"
        assert conference.attrib["endConferenceOnExit"] == "false"
        assert conference.attrib["statusCallback"] == (
            f"{PUBLIC_URL}/api/voice/conference-status?session_id={SID}"
        )
        assert conference.attrib["statusCallbackEvent"] == "start end join leave"

        # The same key again (Twilio retried the action): the attempt is past confirmation.
        again = await tw.confirmed(1, human, "1")
        assert verbs(again.text)[0].text == CUSTOMER_GONE


async def test_unknown_caller_declines_and_stale_attempts(
    nats_server: NatsServer, client: Bus
) -> None:
    async with running_service(nats_server.url) as run:
        human = await _ringing(run, client, customer_name=None)
        tw = run.twilio(SID)
        await tw.answer(1, human)
        detected = await tw.detected(1, human, "#")
        assert "A customer needs help with a trade-in" in detected.text
        declined = await tw.confirmed(1, human, "9")
        assert [v.tag for v in verbs(declined.text)] == ["Say", "Hangup"]
        assert verbs(declined.text)[0].text == DECLINED
        # Attempt 1 is over: its webhooks are told the call is no longer needed.
        stale = await tw.answer(1, human)
        assert [v.text for v in verbs(stale.text)][0] == NOT_NEEDED
        # An attempt (or task) that never existed gets the same answer.
        other = TwilioSide(run.http, SID, task_id="task_other")
        assert verbs((await other.answer(1, human)).text)[0].text == NOT_NEEDED


async def test_bad_query_is_400(nats_server: NatsServer) -> None:
    async with running_service(nats_server.url) as run:
        tw = run.twilio(SID)
        params = tw.call_params("CA1")
        for route, query in [
            ("human-answer", {"session_id": SID, "task_id": "t"}),  # no attempt
            ("human-detected", {"session_id": "a.b", "task_id": "t", "attempt": 1}),
            ("human-confirmed", {"session_id": SID, "task_id": "", "attempt": 1}),
            ("human-status", {"session_id": SID, "task_id": "t", "attempt": "x"}),
            ("conference-status", {}),
        ]:
            resp = await tw.post(route, params, query)
            assert resp.status_code == 400, (route, resp.text)


@pytest.mark.parametrize("route", ROUTES)
async def test_forged_signature_is_403(nats_server: NatsServer, route: str) -> None:
    async with running_service(nats_server.url) as run:
        tw = run.twilio(SID)
        params = {**tw.call_params("CA1"), "CallStatus": "completed", "Digits": "1"}
        query = {"session_id": SID, "task_id": "task_1", "attempt": 1}
        path = f"/api/voice/{route}?session_id={SID}&task_id=task_1&attempt=1"
        wrong_token = sign(PUBLIC_URL + path, params).swapcase()
        forged = await tw.post(route, params, query, signature=wrong_token)
        missing = await run.http.post(path, data=params)
        tampered = await run.http.post(
            path,
            data={**params, "Digits": "2"},
            headers={"X-Twilio-Signature": sign(PUBLIC_URL + path, params)},
        )
        internal = await tw.post(
            route, params, query, signature=sign(str(run.http.base_url) + path, params)
        )
        for resp in (forged, missing, tampered, internal):
            assert resp.status_code == 403, resp.text
            assert "X-Twilio-Signature" in resp.text
        metrics = (await run.http.get("/metrics")).text
        assert f'dealerline_escalation_signature_failures_total{{route="{route}"}} 4.0' in metrics


async def test_forwarded_public_url_is_accepted_only_when_trusted(nats_server: NatsServer) -> None:
    path = f"/api/voice/human-status?session_id={SID}&task_id=t&attempt=1"
    params = {"CallSid": "CA1", "CallStatus": "ringing", "SequenceNumber": "0"}
    headers = {
        "X-Twilio-Signature": sign("https://proxy.example.net" + path, params),
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "proxy.example.net",
    }
    async with running_service(nats_server.url) as run:
        assert (await run.http.post(path, data=params, headers=headers)).status_code == 403
    async with running_service(nats_server.url, trust_forwarded_headers=True) as run:
        assert (await run.http.post(path, data=params, headers=headers)).status_code == 204
