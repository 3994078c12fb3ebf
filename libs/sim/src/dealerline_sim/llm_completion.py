"""The OpenAI chat-completions wire format of the scripted LLM: the request it accepts,
the error bodies, and a chosen reply answered whole (``chat.completion``) or streamed as
server-sent ``chat.completion.chunk`` events token by token (with usage when asked), with
the pauses the scenario scripts and a :class:`CompletionRecord` of what was sent when."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from dealerline_sim.llm_scenario import Rule, Scenario, Segment, content_text
from dealerline_sim.llm_templates import render
from dealerline_sim.llm_tool_calls import (
    RenderedCall,
    message_tool_calls,
    render_tool_calls,
    tool_call_deltas,
)

# --------------------------------------------------------------------------- request


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None


def openai_error(
    status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"
) -> JSONResponse:
    """OpenAI's error body."""
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": None}},
        status_code=status,
    )


# --------------------------------------------------------------------------- tokens

_TOKEN = re.compile(r"\s*\S+|\s+$")


def tokenize(text: str) -> list[str]:
    """Word-ish tokens that carry their leading space, as OpenAI's do; they join back
    into ``text`` exactly."""
    return _TOKEN.findall(text)


def count_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(len(tokenize(content_text(m.get("content")))) + 3 for m in messages)


# --------------------------------------------------------------------------- recording


@dataclass
class CompletionRecord:
    """What the endpoint did for one request (``time.monotonic()`` stamps)."""

    index: int
    stream: bool
    reply: str
    tool_calls: list[str]
    started_at: float
    first_chunk_at: float | None = None
    finished_at: float | None = None  # the last chunk (or the whole body) was sent
    cancelled: bool = False  # the client went away before the reply ended
    error_status: int | None = None  # answered with this HTTP error (``error_status`` rule)

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


async def pause(ms: float, closing: asyncio.Event) -> None:
    """Sleep ``ms``; a stopping server (``closing`` set) ends its streams at once instead
    of sleeping them out."""
    if ms <= 0:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(closing.wait(), ms / 1000.0)


# --------------------------------------------------------------------------- the reply


@dataclass(frozen=True)
class ScriptedReply:
    """One completion as the rule scripted it, templates filled."""

    completion_id: str
    created: int
    model: str
    segments: list[Segment]
    calls: list[RenderedCall]
    usage: dict[str, int]
    first_delay_ms: float
    token_delay_ms: float
    include_usage: bool

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments)

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.calls else "stop"


def scripted_reply(
    scenario: Scenario,
    rule: Rule,
    found: re.Match[str] | None,
    req: ChatCompletionRequest,
    messages: list[dict[str, Any]],
    index: int,
) -> ScriptedReply:
    """What ``rule`` answers to the ``index``-th request."""
    segments = [
        Segment(text=render(seg.text, messages, found), delay_ms=seg.delay_ms)
        for seg in rule.segments()
    ]
    calls = render_tool_calls(rule.tool_calls, index, messages, found)
    prompt_tokens = count_tokens(messages)
    completion_tokens = len(tokenize("".join(s.text for s in segments))) + sum(
        len(tokenize(c.arguments)) + 1 for c in calls
    )
    return ScriptedReply(
        completion_id=f"chatcmpl-scripted-{index}",
        created=int(time.time()),
        model=req.model,
        segments=segments,
        calls=calls,
        usage={
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        first_delay_ms=scenario.first_token_delay_ms_of(rule),
        token_delay_ms=scenario.token_delay_ms_of(rule),
        include_usage=bool(req.stream_options and req.stream_options.include_usage),
    )


def completion_body(reply: ScriptedReply) -> dict[str, Any]:
    """The whole answer: a ``chat.completion``."""
    text = reply.text
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text if (text or not reply.calls) else None,
        "refusal": None,
    }
    if reply.calls:
        message["tool_calls"] = message_tool_calls(reply.calls)
    return {
        "id": reply.completion_id,
        "object": "chat.completion",
        "created": reply.created,
        "model": reply.model,
        "system_fingerprint": None,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}
        ],
        "usage": reply.usage,
    }


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"


def _chunk(reply: ScriptedReply, delta: dict[str, Any], finish: str | None = None) -> str:
    data: dict[str, Any] = {
        "id": reply.completion_id,
        "object": "chat.completion.chunk",
        "created": reply.created,
        "model": reply.model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if reply.include_usage:
        data["usage"] = None
    return _event(data)


def _usage_chunk(reply: ScriptedReply) -> str:
    return _event(
        {
            "id": reply.completion_id,
            "object": "chat.completion.chunk",
            "created": reply.created,
            "model": reply.model,
            "system_fingerprint": None,
            "choices": [],
            "usage": reply.usage,
        }
    )


async def stream_events(
    reply: ScriptedReply, record: CompletionRecord, closing: asyncio.Event
) -> AsyncIterator[str]:
    """The answer streamed: a role chunk, the text token by token, each tool call, the
    finish chunk, usage when asked, ``[DONE]``. ``record`` notes when it started and
    ended, or that the client went away first."""
    try:
        await pause(reply.first_delay_ms, closing)
        record.first_chunk_at = time.monotonic()
        yield _chunk(reply, {"role": "assistant", "content": "", "refusal": None})
        first = True
        for segment in reply.segments:
            await pause(segment.delay_ms, closing)
            for token in tokenize(segment.text):
                if not first:
                    await pause(reply.token_delay_ms, closing)
                first = False
                yield _chunk(reply, {"content": token})
        for i, call in enumerate(reply.calls):
            await pause(reply.token_delay_ms, closing)
            for delta in tool_call_deltas(i, call):
                yield _chunk(reply, delta)
        yield _chunk(reply, {}, reply.finish_reason)
        if reply.include_usage:
            yield _usage_chunk(reply)
        yield "data: [DONE]\n\n"
        record.finished_at = time.monotonic()
    finally:
        if record.finished_at is None:
            record.cancelled = True
