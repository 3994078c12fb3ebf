"""The scripted LLM endpoint, through real HTTP with the real openai and langchain clients."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage, SystemMessage, ToolMessage
from langchain_openai import ChatOpenAI

from dealerline_sim.llm import Scenario, ScriptedLLM, Segment, tokenize, wordings_in
from dealerline_sim.llm_vary import (
    CONTINUE_MARK,
    VARY_ENV,
    WORDINGS,
    continue_after,
    vary_from_env,
)

SCENARIO = Scenario.model_validate(
    {
        "model": "scripted-test",
        "default": "Sorry, could you say that again?",
        "rules": [
            {
                "match": r"\[CALL_STARTED\]",
                "when_system_contains": "Sunrise Motors",
                "reply": "Thanks for calling Sunrise Motors. How can I help?",
            },
            {"match": r"\[CALL_STARTED\]", "reply": "Hello, how can I help?"},
            {
                "match": "oil change",
                "tool_calls": [
                    {
                        "name": "check_availability",
                        "arguments": {"service": "oil_change", "day": "tuesday"},
                    }
                ],
            },
            {"match": '"slots"', "on": "tool", "reply": "I have Tuesday at nine."},
            {
                "match": "both",
                "reply": "Let me look.",
                "tool_calls": [{"name": "lookup", "arguments": {"q": "x"}, "id": "call_fixed"}],
            },
            {
                "match": "slow",
                "reply": [{"text": "First part."}, {"text": " Second part.", "delay_ms": 50}],
            },
        ],
    }
)


@pytest.fixture
async def llm() -> AsyncIterator[ScriptedLLM]:
    async with ScriptedLLM(SCENARIO) as server:
        yield server


@pytest.fixture
async def client(llm: ScriptedLLM) -> AsyncIterator[openai.AsyncOpenAI]:
    c = openai.AsyncOpenAI(base_url=llm.base_url, api_key="test-key", max_retries=0)
    yield c
    await c.close()


def test_tokenize_joins_back() -> None:
    text = "Thanks for calling,  Sunrise Motors. How can I help? "
    tokens = tokenize(text)
    assert "".join(tokens) == text
    assert tokens[:3] == ["Thanks", " for", " calling,"]


def test_packaged_demo_scenario_loads() -> None:
    demo = Scenario.load("demo")
    greeting = demo.pick([{"role": "user", "content": "[CALL_STARTED]"}]).text()
    assert "Sunrise Motors" in greeting
    # The caller's requests lead to the agent's tools; their results to the replies.
    booking = demo.pick([{"role": "user", "content": "I'd like to book an oil change"}])
    assert [c.name for c in booking.tool_calls] == ["set_booking_slot", "set_booking_slot"]
    day = demo.pick([{"role": "user", "content": "Tuesday morning"}])
    assert [c.name for c in day.tool_calls][-1] == "check_availability"
    answered = demo.pick(
        [
            {"role": "user", "content": "Tuesday morning"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "check_availability"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "AVAILABLE: 9:00 AM"},
        ]
    ).text()
    assert "is open" in answered and "book" in answered
    assert "again" in demo.pick([{"role": "user", "content": "blorp"}]).text()


async def test_models_lists_the_scenario_model(client: openai.AsyncOpenAI) -> None:
    models = await client.models.list()
    assert [m.id for m in models.data] == ["scripted-test"]


async def test_non_streaming_reply(client: openai.AsyncOpenAI, llm: ScriptedLLM) -> None:
    result = await client.chat.completions.create(
        model="any",
        messages=[
            {"role": "system", "content": "You answer for Sunrise Motors."},
            {"role": "user", "content": "[CALL_STARTED]"},
        ],
    )
    choice = result.choices[0]
    assert choice.message.content == "Thanks for calling Sunrise Motors. How can I help?"
    assert choice.finish_reason == "stop"
    assert result.usage is not None and result.usage.completion_tokens > 0
    assert llm.requests[-1]["messages"][-1]["content"] == "[CALL_STARTED]"
    assert llm.completions[-1].finished


async def test_when_system_contains_falls_through(client: openai.AsyncOpenAI) -> None:
    result = await client.chat.completions.create(
        model="any", messages=[{"role": "user", "content": "[CALL_STARTED]"}]
    )
    assert result.choices[0].message.content == "Hello, how can I help?"


async def test_default_reply(client: openai.AsyncOpenAI) -> None:
    result = await client.chat.completions.create(
        model="any", messages=[{"role": "user", "content": "mumble mumble"}]
    )
    assert result.choices[0].message.content == "Sorry, could you say that again?"


async def test_streaming_tokens_in_order_with_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="any",
        messages=[{"role": "user", "content": "go slow please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    contents: list[str] = []
    finish: list[str] = []
    usage = None
    async for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                contents.append(choice.delta.content)
            if choice.finish_reason:
                finish.append(choice.finish_reason)
    assert contents == ["First", " part.", " Second", " part."]
    assert finish == ["stop"]
    assert usage is not None and usage.completion_tokens == 4


async def test_streaming_is_server_sent_events(llm: ScriptedLLM) -> None:
    async with (
        httpx.AsyncClient() as http,
        http.stream(
            "POST",
            f"{llm.base_url}/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        ) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in response.aiter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    first = json.loads(lines[0].removeprefix("data: "))
    assert first["choices"][0]["delta"]["role"] == "assistant"


async def test_tool_call_non_streaming_then_tool_result(client: openai.AsyncOpenAI) -> None:
    result = await client.chat.completions.create(
        model="any", messages=[{"role": "user", "content": "I need an oil change"}]
    )
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls or []
    assert len(calls) == 1
    call = calls[0]
    assert call.function.name == "check_availability"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"service": "oil_change", "day": "tuesday"}  # type: ignore[union-attr]

    follow = await client.chat.completions.create(
        model="any",
        messages=[
            {"role": "user", "content": "I need an oil change"},
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": '{"slots": ["tue 9am"]}'},
        ],
    )
    assert follow.choices[0].message.content == "I have Tuesday at nine."


async def test_tool_call_streaming(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="any", messages=[{"role": "user", "content": "do both"}], stream=True
    )
    content = ""
    ids: list[str] = []
    names: list[str] = []
    args = ""
    finish = None
    async for chunk in stream:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            for tc in choice.delta.tool_calls or []:
                assert tc.index == 0
                if tc.id:
                    ids.append(tc.id)
                if tc.function and tc.function.name:
                    names.append(tc.function.name)
                if tc.function and tc.function.arguments:
                    args += tc.function.arguments
            finish = choice.finish_reason or finish
    assert content == "Let me look."
    assert ids == ["call_fixed"]
    assert names == ["lookup"]
    assert json.loads(args) == {"q": "x"}
    assert finish == "tool_calls"


async def test_chat_openai_streaming_and_tools(llm: ScriptedLLM) -> None:
    chat = ChatOpenAI(
        base_url=llm.base_url,
        api_key="test-key",
        model="gpt-4.1-mini",
        streaming=True,
        max_retries=0,
    )
    chunks: list[str] = []
    async for chunk in chat.astream(
        [SystemMessage("You answer for Sunrise Motors."), HumanMessage("[CALL_STARTED]")]
    ):
        assert isinstance(chunk, AIMessageChunk)
        if isinstance(chunk.content, str) and chunk.content:
            chunks.append(chunk.content)
    assert "".join(chunks) == "Thanks for calling Sunrise Motors. How can I help?"
    assert len(chunks) == len(tokenize("Thanks for calling Sunrise Motors. How can I help?"))

    message = await chat.ainvoke([HumanMessage("book an oil change")])
    assert message.tool_calls == [  # type: ignore[attr-defined]
        {
            "name": "check_availability",
            "args": {"service": "oil_change", "day": "tuesday"},
            "id": message.tool_calls[0]["id"],  # type: ignore[attr-defined]
            "type": "tool_call",
        }
    ]
    answer = await chat.ainvoke(
        [
            HumanMessage("book an oil change"),
            message,
            ToolMessage('{"slots": ["tue 9am"]}', tool_call_id=message.tool_calls[0]["id"]),  # type: ignore[attr-defined]
        ]
    )
    assert answer.content == "I have Tuesday at nine."
    assert llm.requests[-1]["messages"][-1]["role"] == "tool"


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        json.dumps({"model": "m"}).encode(),
        json.dumps({"model": "m", "messages": []}).encode(),
        json.dumps({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}).encode(),
    ],
)
async def test_malformed_request_is_400_openai_shaped(llm: ScriptedLLM, body: bytes) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{llm.base_url}/chat/completions",
            content=body,
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    assert llm.requests == []


async def test_openai_client_raises_bad_request(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model="any", messages=[])
    assert info.value.status_code == 400


# --------------------------------------------------------------------------- continuation


def continuation(said: str) -> dict[str, str]:
    """The system note an agent taking over a reply sends (dealerline_agent.resume)."""
    return {
        "role": "system",
        "content": f"{CONTINUE_MARK}: a fault cut your reply. The caller has already heard "
        f"you say:\n<<<\n{said}\n>>>\nContinue it from exactly where it stopped.",
    }


async def ask(client: openai.AsyncOpenAI, messages: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The reply's text and the names of the tools it calls (a real client, real HTTP)."""
    completion = await client.chat.completions.create(
        model="m",
        messages=messages,  # type: ignore[arg-type]
    )
    message = completion.choices[0].message
    return message.content or "", [c.function.name for c in message.tool_calls or []]


async def test_a_continuation_says_what_is_left_of_the_reply(client: openai.AsyncOpenAI) -> None:
    slow = {"role": "user", "content": "slow please"}
    assert await ask(client, [slow]) == ("First part. Second part.", [])
    assert await ask(client, [slow, continuation("First part.")]) == ("Second part.", [])
    # A sentence cut mid-way: the rest of it, not the whole sentence again.
    rest, _ = await ask(client, [slow, continuation("First part. Second")])
    assert rest == "part."
    # All said: nothing more.
    assert await ask(client, [slow, continuation("First part. Second part.")]) == ("", [])


async def test_a_continuation_still_calls_the_tools_of_a_step_whose_words_were_said(
    client: openai.AsyncOpenAI,
) -> None:
    both = {"role": "user", "content": "both"}
    assert await ask(client, [both]) == ("Let me look.", ["lookup"])
    assert await ask(client, [both, continuation("Let me look.")]) == ("", ["lookup"])
    # The step after the tool: its words said before the takeover are not said again.
    after_tool = [
        both,
        continuation("Let me look. I have Tuesday"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"slots": ["tue 9am"]}'},
    ]
    assert await ask(client, after_tool) == ("at nine.", [])


def test_a_reply_unlike_the_words_said_is_answered_whole() -> None:
    segments = [Segment(text="Good news. It is ready.")]
    assert continue_after(segments, "Something else entirely.") == segments
    # One shared word at the seam is a coincidence, not an overlap.
    assert continue_after(segments, "That is good") == segments


# --------------------------------------------------------------------------- vary mode


async def test_vary_mode_words_each_run_in_one_variant_picked_at_random() -> None:
    greet = [
        {"role": "system", "content": "Sunrise Motors"},
        {"role": "user", "content": "[CALL_STARTED]"},
    ]
    async with ScriptedLLM(SCENARIO, vary=True, seed=7) as llm:
        c = openai.AsyncOpenAI(base_url=llm.base_url, api_key="k", max_retries=0)
        replies = [(await ask(c, greet))[0] for _ in range(12)]
        await c.close()
    wordings = [wordings_in(r) for r in replies]
    assert all(len(w) == 1 for w in wordings), replies  # one wording per reply
    assert len({next(iter(w)) for w in wordings}) > 1, replies  # a re-run differs
    for reply in replies:  # every sentence carries it; the words are the scripted ones
        lead = WORDINGS[next(iter(wordings_in(reply)))]
        assert reply == f"{lead}, Thanks for calling Sunrise Motors. {lead}, How can I help?"


async def test_vary_mode_keeps_the_wording_through_a_turns_steps_and_a_continuation() -> None:
    async with ScriptedLLM(SCENARIO, vary=True) as llm:
        c = openai.AsyncOpenAI(base_url=llm.base_url, api_key="k", max_retries=0)
        both = {"role": "user", "content": "both"}
        first, _ = await ask(c, [both])
        (wording,) = wordings_in(first)
        lead = WORDINGS[wording]
        step = {
            "role": "assistant",
            "content": first,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
            ],
        }
        tool = {"role": "tool", "tool_call_id": "c1", "content": '{"slots": ["tue 9am"]}'}
        assert await ask(c, [both, step, tool]) == (f"{lead}, I have Tuesday at nine.", [])
        # A takeover after the first step: the rest in the wording already heard.
        resumed = [both, continuation(first), {**step, "content": ""}, tool]
        assert await ask(c, resumed) == (f"{lead}, I have Tuesday at nine.", [])
        slow = {"role": "user", "content": "slow"}
        said = f"{lead}, First part."
        assert await ask(c, [slow, continuation(said)]) == (f"{lead}, Second part.", [])
        await c.close()


async def test_the_default_is_deterministic_and_the_environment_turns_vary_on(
    client: openai.AsyncOpenAI, llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not llm.vary
    greet = [{"role": "user", "content": "[CALL_STARTED]"}]
    assert {(await ask(client, greet))[0] for _ in range(5)} == {"Hello, how can I help?"}
    monkeypatch.setenv(VARY_ENV, "1")
    assert vary_from_env() and ScriptedLLM(SCENARIO).vary
    monkeypatch.setenv(VARY_ENV, "0")
    assert not vary_from_env() and not ScriptedLLM(SCENARIO).vary
