"""The scripted LLM endpoint, through real HTTP with the real openai and langchain clients."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage, SystemMessage, ToolMessage
from langchain_openai import ChatOpenAI

from dealerline_sim.llm import Scenario, ScriptedLLM, tokenize

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
