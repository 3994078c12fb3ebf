"""A scripted OpenAI-compatible chat endpoint, for tests and the offline demo.

It speaks the real wire protocol (``POST /v1/chat/completions``, streamed or not, with
tool calls and usage; ``GET /v1/models``) so that the production clients (``openai``,
``langchain_openai.ChatOpenAI``) are what the tests exercise. Replies come from a
scenario file: an ordered list of rules, each a regex over the last user message (or
over the last tool result when the conversation ends with one); the first rule that
matches answers, otherwise the scenario's ``default`` does.

Scenario file (YAML)::

    model: scripted                  # the model id /v1/models lists (any id is accepted)
    token_delay_ms: 20               # defaults for every rule
    first_token_delay_ms: 150
    default: "Sorry, could you say that again?"
    rules:
      - match: '\\[CALL_STARTED\\]'   # re.search, case-insensitive unless case_sensitive
        when_system_contains: Sunrise  # optional: the system prompt must contain this
        reply: "Thanks for calling. How can I help?"
      - match: 'slow'
        reply:                       # segments: delay_ms is a pause before the segment
          - text: "First sentence."
          - text: " The rest comes later."
            delay_ms: 2000
      - match: 'oil change'
        tool_calls:
          - name: check_availability
            arguments: {service: oil_change}
      - match: '"slots"'             # matched against the tool result that comes back
        on: tool
        reply: "I have Tuesday at nine."
      - match: 'booked'
        after_tool: book_appointment   # only when the last message is that tool's result
        reply: "Done: appointment {last_tool:appointment_id}."
      - match: 'flaky'
        error_status: 500            # answer with an HTTP error instead ...
        times: 2                     # ... the first two times this rule matches

Templates in replies and tool-call arguments: ``{g1}``… (groups of ``match``),
``{today}`` and ``{date:+N}`` (from the ``TODAY: YYYY-MM-DD`` line of the system prompt,
else the real date), ``{next:tuesday}`` (the next such weekday after today),
``{last_tool:key}`` (``key=value`` or ``"key": value`` in the latest tool result),
``{sys:some words}`` (the token after ``some words`` in the system prompt).

Run it on its own with ``python -m dealerline_sim.llm --scenario demo --port 8090`` (a
path, or the name of a scenario shipped in ``dealerline_sim/scenarios``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.resources
import itertools
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from dealerline_common.ops import HttpServer

# --------------------------------------------------------------------------- scenario


class Segment(BaseModel):
    """Part of a reply; ``delay_ms`` is an extra pause before its first token."""

    model_config = ConfigDict(extra="forbid")

    text: str
    delay_ms: float = Field(default=0.0, ge=0)


class ScriptedToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    id: str | None = None

    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, separators=(",", ":"))


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    match: str = Field(default=".*", description="regex searched in the matched message")
    on: Literal["auto", "user", "tool"] = Field(
        default="auto",
        description="auto: the tool result if the last message is a tool message, "
        "else the last user message; user/tool: only when the last message is of that kind",
    )
    when_system_contains: str | None = None
    after_tool: str | None = Field(
        default=None, description="the last message is the result of this tool"
    )
    case_sensitive: bool = False
    times: int | None = Field(default=None, ge=1, description="matches only this many times")
    error_status: int | None = Field(default=None, ge=400, le=599)
    reply: str | list[Segment] | None = None
    tool_calls: list[ScriptedToolCall] = Field(default_factory=list)
    token_delay_ms: float | None = Field(default=None, ge=0)
    first_token_delay_ms: float | None = Field(default=None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _yaml_on_key(cls, data: Any) -> Any:
        # YAML 1.1 reads a bare ``on:`` key as the boolean True.
        if isinstance(data, dict) and True in data:
            data = dict(data)
            data["on"] = data.pop(True)
        return data

    @field_validator("match")
    @classmethod
    def _compiles(cls, value: str) -> str:
        re.compile(value)
        return value

    def segments(self) -> list[Segment]:
        if self.reply is None:
            return []
        if isinstance(self.reply, str):
            return [Segment(text=self.reply)]
        return list(self.reply)

    def text(self) -> str:
        return "".join(s.text for s in self.segments())


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = "scripted"
    token_delay_ms: float = Field(default=0.0, ge=0)
    first_token_delay_ms: float = Field(default=0.0, ge=0)
    default: str | list[Segment] = "Sorry, I didn't catch that. Could you say it again?"
    rules: list[Rule] = Field(default_factory=list)

    @classmethod
    def from_yaml(cls, source: str | Path) -> Scenario:
        """Load a scenario from a YAML file path."""
        data = yaml.safe_load(Path(source).read_text(encoding="utf-8")) or {}
        return cls.model_validate(data)

    @classmethod
    def load(cls, name_or_path: str | Path) -> Scenario:
        """A file path, or the name (``demo``) of a scenario shipped with this package."""
        path = Path(name_or_path)
        if path.exists():
            return cls.from_yaml(path)
        packaged = (
            importlib.resources.files("dealerline_sim") / "scenarios" / f"{name_or_path}.yaml"
        )
        if packaged.is_file():
            return cls.model_validate(yaml.safe_load(packaged.read_text(encoding="utf-8")) or {})
        raise FileNotFoundError(f"no scenario file or packaged scenario named {name_or_path!r}")

    def default_rule(self) -> Rule:
        return Rule(reply=self.default)

    def pick(self, messages: list[dict[str, Any]], used: dict[int, int] | None = None) -> Rule:
        """The first rule matching the conversation, else the default."""
        return self.match(messages, used)[0]

    def match(
        self, messages: list[dict[str, Any]], used: dict[int, int] | None = None
    ) -> tuple[Rule, re.Match[str] | None]:
        """The first matching rule and its regex match; ``used`` counts matches per rule
        (for ``times``) and is updated."""
        last = messages[-1] if messages else {}
        last_is_tool = last.get("role") == "tool"
        tool_text = content_text(last.get("content")) if last_is_tool else None
        last_tool_name = _tool_name(messages, last) if last_is_tool else None
        user_text = next(
            (content_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"),
            "",
        )
        system_text = "\n".join(
            content_text(m.get("content"))
            for m in messages
            if m.get("role") in ("system", "developer")
        )
        for index, rule in enumerate(self.rules):
            if rule.on == "tool" and not last_is_tool:
                continue
            if rule.on == "user" and last_is_tool:
                continue
            if rule.after_tool is not None and rule.after_tool != last_tool_name:
                continue
            if rule.when_system_contains and rule.when_system_contains not in system_text:
                continue
            if rule.times is not None and used is not None and used.get(index, 0) >= rule.times:
                continue
            target = tool_text if last_is_tool and tool_text is not None else user_text
            flags = 0 if rule.case_sensitive else re.IGNORECASE
            found = re.search(rule.match, target, flags | re.DOTALL)
            if found:
                if used is not None:
                    used[index] = used.get(index, 0) + 1
                return rule, found
        return self.default_rule(), None


def _tool_name(messages: list[dict[str, Any]], tool_message: dict[str, Any]) -> str | None:
    call_id = tool_message.get("tool_call_id")
    for m in reversed(messages):
        for tc in m.get("tool_calls") or []:
            if tc.get("id") == call_id:
                return str(tc.get("function", {}).get("name"))
    return None


_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_TEMPLATE = re.compile(
    r"\{(g\d|today|date:[+-]?\d+|next:[a-z]+|last_tool:[A-Za-z_]+|sys:[A-Za-z_ ]+)\}"
)


def render(text: str, messages: list[dict[str, Any]], found: re.Match[str] | None) -> str:
    """Fill the templates of a reply or of tool-call arguments (see the module doc)."""
    if "{" not in text:
        return text

    def today() -> date:
        system = "\n".join(
            content_text(m.get("content")) for m in messages if m.get("role") == "system"
        )
        seen = re.search(r"TODAY:\s*(\d{4}-\d{2}-\d{2})", system)
        return date.fromisoformat(seen.group(1)) if seen else date.today()

    def last_tool(key: str) -> str:
        for m in reversed(messages):
            if m.get("role") != "tool":
                continue
            body = content_text(m.get("content"))
            hit = re.search(rf'"?{re.escape(key)}"?\s*[=:]\s*"?([^",}}|\s]+)', body)
            if hit:
                return hit.group(1)
        return ""

    def from_system(words: str) -> str:
        system = "\n".join(
            content_text(m.get("content")) for m in messages if m.get("role") == "system"
        )
        hit = re.search(rf"{re.escape(words)}\s*[=:]?\s*([^\s,;)]+)", system)
        return hit.group(1) if hit else ""

    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        if name.startswith("sys:"):
            return from_system(name[4:])
        if name.startswith("g"):
            index = int(name[1:])
            return (found.group(index) or "") if found and index <= (found.re.groups) else ""
        if name == "today":
            return today().isoformat()
        if name.startswith("date:"):
            return (today() + timedelta(days=int(name[5:]))).isoformat()
        if name.startswith("next:"):
            wanted = _WEEKDAYS.index(name[5:])
            base = today()
            ahead = (wanted - base.weekday()) % 7 or 7
            return (base + timedelta(days=ahead)).isoformat()
        return last_tool(name.split(":", 1)[1])

    return _TEMPLATE.sub(one, text)


def content_text(content: Any) -> str:
    """The text of an OpenAI message ``content`` (a string or a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return str(content)


_TOKEN = re.compile(r"\s*\S+|\s+$")


def tokenize(text: str) -> list[str]:
    """Word-ish tokens that carry their leading space, as OpenAI's do; they join back
    into ``text`` exactly."""
    return _TOKEN.findall(text)


def _count_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(len(tokenize(content_text(m.get("content")))) + 3 for m in messages)


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


def _error(status: int, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": param,
                "code": None,
            }
        },
        status_code=status,
    )


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


@dataclass
class Recorder:
    requests: list[dict[str, Any]] = field(default_factory=list)
    completions: list[CompletionRecord] = field(default_factory=list)
    closing: asyncio.Event = field(default_factory=asyncio.Event)


# --------------------------------------------------------------------------- app


def create_llm_app(scenario: Scenario, recorder: Recorder | None = None) -> FastAPI:
    """The FastAPI app serving ``scenario``; ``recorder`` collects what it was asked."""
    rec = recorder or Recorder()
    app = FastAPI(title="dealerline scripted LLM")
    app.state.recorder = rec
    app.state.scenario = scenario
    counter = itertools.count(1)
    used: dict[int, int] = {}  # matches per rule index, for ``times``

    async def pause(ms: float) -> None:
        if ms <= 0:
            return
        # A stopping server ends its streams at once instead of sleeping them out.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(rec.closing.wait(), ms / 1000.0)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": scenario.model,
                    "object": "model",
                    "created": 0,
                    "owned_by": "dealerline-sim",
                }
            ],
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return _error(400, "The request body must be a JSON object.")
        try:
            req = ChatCompletionRequest.model_validate(body)
        except ValidationError as exc:
            err = exc.errors()[0]
            param = ".".join(str(p) for p in err["loc"]) or None
            return _error(400, f"Invalid request: {param}: {err['msg']}", param)
        rec.requests.append(body)
        n = next(counter)
        messages = [m.model_dump() for m in req.messages]
        rule, found = scenario.match(messages, used)
        if rule.error_status is not None:
            rec.completions.append(
                CompletionRecord(
                    index=n,
                    stream=req.stream,
                    reply="",
                    tool_calls=[],
                    started_at=time.monotonic(),
                    error_status=rule.error_status,
                )
            )
            await pause(
                rule.first_token_delay_ms
                if rule.first_token_delay_ms is not None
                else scenario.first_token_delay_ms
            )
            return JSONResponse(
                {
                    "error": {
                        "message": "The scripted endpoint was told to fail this request.",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                },
                status_code=rule.error_status,
            )
        segments = [
            Segment(text=render(seg.text, messages, found), delay_ms=seg.delay_ms)
            for seg in rule.segments()
        ]
        reply = "".join(s.text for s in segments)
        token_delay = (
            rule.token_delay_ms if rule.token_delay_ms is not None else scenario.token_delay_ms
        )
        first_delay = (
            rule.first_token_delay_ms
            if rule.first_token_delay_ms is not None
            else scenario.first_token_delay_ms
        )
        calls = [
            (tc.id or f"call_{n}_{i}", tc.name, render(tc.arguments_json(), messages, found))
            for i, tc in enumerate(rule.tool_calls)
        ]
        record = CompletionRecord(
            index=n,
            stream=req.stream,
            reply=reply,
            tool_calls=[c[1] for c in calls],
            started_at=time.monotonic(),
        )
        rec.completions.append(record)
        completion_id = f"chatcmpl-scripted-{n}"
        created = int(time.time())
        finish_reason = "tool_calls" if calls else "stop"
        prompt_tokens = _count_tokens(messages)
        completion_tokens = len(tokenize(reply)) + sum(len(tokenize(c[2])) + 1 for c in calls)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

        if not req.stream:
            await pause(first_delay)
            message: dict[str, Any] = {
                "role": "assistant",
                "content": reply if (reply or not calls) else None,
                "refusal": None,
            }
            if calls:
                message["tool_calls"] = [
                    {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
                    for cid, name, args in calls
                ]
            record.first_chunk_at = record.finished_at = time.monotonic()
            return JSONResponse(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": req.model,
                    "system_fingerprint": None,
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "logprobs": None,
                            "finish_reason": finish_reason,
                        }
                    ],
                    "usage": usage,
                }
            )

        include_usage = bool(req.stream_options and req.stream_options.include_usage)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            data: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": req.model,
                "system_fingerprint": None,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage:
                data["usage"] = None
            return f"data: {json.dumps(data)}\n\n"

        async def events() -> AsyncIterator[str]:
            try:
                await pause(first_delay)
                record.first_chunk_at = time.monotonic()
                yield chunk({"role": "assistant", "content": "", "refusal": None})
                first = True
                for segment in segments:
                    await pause(segment.delay_ms)
                    for token in tokenize(segment.text):
                        if not first:
                            await pause(token_delay)
                        first = False
                        yield chunk({"content": token})
                for i, (cid, name, args) in enumerate(calls):
                    await pause(token_delay)
                    yield chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": i,
                                    "id": cid,
                                    "type": "function",
                                    "function": {"name": name, "arguments": ""},
                                }
                            ]
                        }
                    )
                    for fragment in _fragments(args):
                        yield chunk(
                            {"tool_calls": [{"index": i, "function": {"arguments": fragment}}]}
                        )
                yield chunk({}, finish_reason)
                if include_usage:
                    final = {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": req.model,
                        "system_fingerprint": None,
                        "choices": [],
                        "usage": usage,
                    }
                    yield f"data: {json.dumps(final)}\n\n"
                yield "data: [DONE]\n\n"
                record.finished_at = time.monotonic()
            finally:
                if record.finished_at is None:
                    record.cancelled = True

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    return app


def _fragments(text: str, size: int = 8) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


# --------------------------------------------------------------------------- in-process


class ScriptedLLM:
    """The scripted endpoint served by uvicorn inside the caller's event loop.

    ::

        async with ScriptedLLM("demo") as llm:
            client = AsyncOpenAI(base_url=llm.base_url, api_key="x")
            ...
            llm.requests[-1]["messages"]   # what the client sent
    """

    def __init__(
        self, scenario: Scenario | str | Path, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.scenario = scenario if isinstance(scenario, Scenario) else Scenario.load(scenario)
        self.recorder = Recorder()
        self.app = create_llm_app(self.scenario, self.recorder)
        self._server = HttpServer(self.app, host, port)
        self.host = host

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.recorder.requests

    @property
    def completions(self) -> list[CompletionRecord]:
        return self.recorder.completions

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> ScriptedLLM:
        self.recorder.closing.clear()
        await self._server.start()
        return self

    async def stop(self) -> None:
        self.recorder.closing.set()
        await self._server.stop()

    async def __aenter__(self) -> ScriptedLLM:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a scripted OpenAI-compatible endpoint")
    parser.add_argument("--scenario", default="demo", help="a YAML file, or a packaged name")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args(argv)
    import uvicorn

    uvicorn.run(create_llm_app(Scenario.load(args.scenario)), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
