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

The scenario and its matching live in ``dealerline_sim.llm_scenario``, the templates in
``llm_templates``, the wire format (whole and streamed answers) in ``llm_completion`` and
tool calls in ``llm_tool_calls``; this module is the app that serves them.

A continuation request (an agent taking over a reply another replica started) is answered
with what is left of the scripted reply; with ``SIM_LLM_VARY=1`` (or ``--vary``) each turn's
reply is worded in one of several variants picked at random, so a model run twice is
detectably different (``dealerline_sim.llm_vary``). The default is deterministic.

Run it on its own with ``python -m dealerline_sim.llm --scenario demo --port 8090`` (a
path, or the name of a scenario shipped in ``dealerline_sim/scenarios``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from dealerline_common.ops import HttpServer
from dealerline_sim.llm_completion import (
    ChatCompletionRequest,
    CompletionRecord,
    ScriptedReply,
    completion_body,
    openai_error,
    pause,
    scripted_reply,
    stream_events,
    tokenize,
)
from dealerline_sim.llm_scenario import Rule, Scenario, ScriptedToolCall, Segment, content_text
from dealerline_sim.llm_templates import render
from dealerline_sim.llm_vary import ReplyShaper, vary_from_env, wordings_in

__all__ = [
    "CompletionRecord",
    "Recorder",
    "Rule",
    "Scenario",
    "ScriptedLLM",
    "ScriptedToolCall",
    "Segment",
    "content_text",
    "create_llm_app",
    "render",
    "tokenize",
    "wordings_in",
]


@dataclass
class Recorder:
    """What the endpoint was asked (request bodies) and what it answered."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    completions: list[CompletionRecord] = field(default_factory=list)
    closing: asyncio.Event = field(default_factory=asyncio.Event)


# --------------------------------------------------------------------------- app


def create_llm_app(
    scenario: Scenario,
    recorder: Recorder | None = None,
    *,
    vary: bool = False,
    seed: int | None = None,
) -> FastAPI:
    """The FastAPI app serving ``scenario``; ``recorder`` collects what it was asked;
    ``vary``: word each turn's reply in a random variant (``seed`` makes the picks
    repeatable)."""
    rec = recorder or Recorder()
    shaper = ReplyShaper(vary=vary, rng=random.Random(seed))
    app = FastAPI(title="dealerline scripted LLM")
    app.state.recorder = rec
    app.state.scenario = scenario
    counter = itertools.count(1)
    used: dict[int, int] = {}  # matches per rule index, for ``times``

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return _models(scenario)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        parsed = await _parse_request(request)
        if isinstance(parsed, Response):
            return parsed
        body, req = parsed
        rec.requests.append(body)
        n = next(counter)
        messages = [m.model_dump() for m in req.messages]
        rule, found = scenario.match(messages, used)
        if rule.error_status is not None:
            return await _scripted_failure(scenario, rule, req, n, rec)
        reply = shaper.shape(scripted_reply(scenario, rule, found, req, messages, n), messages)
        return await _answer(reply, req, n, rec)

    return app


def _models(scenario: Scenario) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": scenario.model, "object": "model", "created": 0, "owned_by": "dealerline-sim"}
        ],
    }


async def _parse_request(
    request: Request,
) -> tuple[dict[str, Any], ChatCompletionRequest] | Response:
    """The JSON body and the request it validates as, or OpenAI's 400 answer."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return openai_error(400, "We could not parse the JSON body of your request.")
    if not isinstance(body, dict):
        return openai_error(400, "The request body must be a JSON object.")
    try:
        req = ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err["loc"]) or None
        return openai_error(400, f"Invalid request: {param}: {err['msg']}", param)
    return body, req


async def _scripted_failure(
    scenario: Scenario, rule: Rule, req: ChatCompletionRequest, n: int, rec: Recorder
) -> Response:
    """An ``error_status`` rule: the HTTP error, after the first-token pause."""
    assert rule.error_status is not None
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
    await pause(scenario.first_token_delay_ms_of(rule), rec.closing)
    return openai_error(
        rule.error_status,
        "The scripted endpoint was told to fail this request.",
        kind="server_error",
    )


async def _answer(
    reply: ScriptedReply, req: ChatCompletionRequest, n: int, rec: Recorder
) -> JSONResponse | StreamingResponse:
    record = CompletionRecord(
        index=n,
        stream=req.stream,
        reply=reply.text,
        tool_calls=[c.name for c in reply.calls],
        started_at=time.monotonic(),
    )
    rec.completions.append(record)
    if not req.stream:
        await pause(reply.first_delay_ms, rec.closing)
        record.first_chunk_at = record.finished_at = time.monotonic()
        return JSONResponse(completion_body(reply))
    return StreamingResponse(
        stream_events(reply, record, rec.closing),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )


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
        self,
        scenario: Scenario | str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        vary: bool | None = None,
        seed: int | None = None,
    ) -> None:
        self.scenario = scenario if isinstance(scenario, Scenario) else Scenario.load(scenario)
        self.recorder = Recorder()
        self.vary = vary_from_env() if vary is None else vary
        self.app = create_llm_app(self.scenario, self.recorder, vary=self.vary, seed=seed)
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
    parser.add_argument(
        "--vary",
        action=argparse.BooleanOptionalAction,
        default=vary_from_env(),
        help="word each turn's reply in a random variant (default: $SIM_LLM_VARY)",
    )
    args = parser.parse_args(argv)
    import uvicorn

    app = create_llm_app(Scenario.load(args.scenario), vary=args.vary)
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
