"""The reply pipeline of a turn: the graph's stream (LLM tokens and finished steps) →
text pieces → sentences, each spoken the moment it is complete.

:func:`graph_step` reads one item of LangGraph's ``messages``/``updates`` stream (pure);
:class:`Reply` keeps what the turn has said so far and hands finished sentences to the
turn's :class:`~.speaker.TurnVoice`. Words said before a tool call go out when the LLM
step ends, not after the tool runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk

from dealerline_common.messages import TurnTimings, now

from .graph import AGENT_NODE
from .history import text_of
from .llm import UNSTREAMED
from .metrics import AgentMetrics
from .sentences import SentenceSplitter
from .speaker import TurnVoice, raise_if_cancelled
from .turn_record import TurnRecord


@dataclass
class GraphStep:
    """What one item of the graph's stream means for the reply."""

    pieces: list[str] = field(default_factory=list)  # text to say, in order
    agent_updated: bool = False  # the agent node finished an LLM step
    finished: AIMessage | None = None  # that step's message


def graph_step(mode: str, payload: Any) -> GraphStep:
    if mode == "messages":
        chunk, meta = payload
        node = meta.get("langgraph_node") if isinstance(meta, dict) else None
        if node != AGENT_NODE or not isinstance(chunk, AIMessageChunk):
            return GraphStep()
        piece = text_of(chunk)
        return GraphStep(pieces=[piece] if piece else [])
    if mode != "updates" or not isinstance(payload, dict) or AGENT_NODE not in payload:
        return GraphStep()
    done = payload[AGENT_NODE]
    if not isinstance(done, dict):
        return GraphStep(agent_updated=True)
    message = done["messages"][-1]
    # The last-resort apology was not streamed token by token: it is said now.
    pieces = [text_of(message)] if message.additional_kwargs.get(UNSTREAMED) else []
    return GraphStep(pieces=pieces, agent_updated=True, finished=message)


class Reply:
    """One turn's reply as it streams out."""

    def __init__(
        self,
        record: TurnRecord,
        timings: TurnTimings,
        metrics: AgentMetrics,
        splitter: SentenceSplitter,
        voice: TurnVoice,
    ) -> None:
        self.record = record
        self.timings = timings
        self.metrics = metrics
        self.splitter = splitter
        self.voice = voice
        self.parts: list[str] = []  # everything said
        self.said: list[str] = []  # sentences an earlier delivery said (a resumed reply)
        self.step_parts: list[str] = []  # what the LLM step in progress said
        self.steps_done = 0

    def text(self) -> str:
        return "".join(self.parts).strip()

    def unfinished_step(self) -> str:
        """The words of the LLM step still in progress (a cut-short turn keeps them)."""
        return "".join(self.step_parts).strip()

    async def resume(self, said: list[str]) -> None:
        """Start after the sentences an earlier delivery of the turn said: they are the
        reply's beginning, spoken again under their own ids (nothing is heard twice)."""
        if not said:
            return
        self.said = list(said)
        self.parts.append(" ".join(said) + " ")
        await self.voice.resume(said)

    async def run(self, stream: AsyncIterator[tuple[str, Any]]) -> None:
        async for mode, payload in stream:
            raise_if_cancelled()
            step = graph_step(mode, payload)
            if step.finished is not None:
                self._step_finished(step.finished)
            for piece in step.pieces:
                await self._take(piece)
            if step.agent_updated:
                # Words said before a tool call go out now, not after the tool runs.
                await self.voice.say_all(self.splitter.flush())
        await self.voice.say_all(self.splitter.flush())

    def _step_finished(self, message: AIMessage) -> None:
        self.steps_done += 1
        self.step_parts = []
        for call in message.tool_calls:
            self.metrics.tool_calls.labels(call["name"]).inc()

    async def _take(self, piece: str) -> None:
        if self.timings.first_token is None:
            self.timings.first_token = now()
            self.timings.llm_request = self.record.llm_request
            if self.record.llm_request is not None:
                self.metrics.llm_first_token.observe(
                    self.timings.first_token - self.record.llm_request
                )
        self.parts.append(piece)
        self.step_parts.append(piece)
        for sentence in self.splitter.push(piece):
            await self.voice.say(sentence)
