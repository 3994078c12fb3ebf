"""The rest of the fleet as the agent sees it, for agent tests: publishes transcripts and
control messages on a real bus, collects what the agent says and the dashboard events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg

from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.conversation import (
    turn_id_for_call,
    turn_id_for_stream,
    turn_id_for_utterance,
)
from dealerline_common.messages import (
    AgentJob,
    CallIncoming,
    EscalationStatus,
    Say,
    StreamStarted,
    StreamStopped,
    Transcript,
    TurnTimings,
    agent_job_id,
    loads,
    parse_event,
)


class Caller:
    """The rest of the fleet as the agent sees it: publishes transcripts and control,
    collects what the agent says and the dashboard events."""

    def __init__(self, bus: Bus, sid: str) -> None:
        self.bus = bus
        self.sid = sid
        self.says: asyncio.Queue[Say] = asyncio.Queue()
        self.events: asyncio.Queue[Any] = asyncio.Queue()
        self.heard: list[Say] = []  # every sentence, in arrival order
        self.index = 0

    async def start(self) -> None:
        async def on_say(msg: Msg) -> None:
            say = loads(Say, msg.data)
            self.heard.append(say)
            self.says.put_nowait(say)

        async def on_event(msg: Msg) -> None:
            self.events.put_nowait(parse_event(msg.data))

        await self.bus.subscribe(subjects.say(self.sid), on_say)
        await self.bus.subscribe(subjects.events(self.sid), on_event)
        await self.bus.ensure_streams()  # a job may go out before any agent is up

    async def job(self, job: AgentJob) -> None:
        """``job`` as the agent's durable work (``call.<sid>.agent_job``), as the gateway
        and the escalation service send it."""
        await self.bus.publish_durable(subjects.agent_job(self.sid), job, msg_id=agent_job_id(job))

    async def incoming(self, call_sid: str = "CA1", **kw: Any) -> str:
        """What the gateway sends when it answers the incoming webhook; the greeting's
        turn id."""
        incoming = CallIncoming(session_id=self.sid, call_sid=call_sid, **kw)
        await self.job(incoming)
        await self.bus.publish(subjects.control(self.sid), incoming)
        return turn_id_for_call(call_sid)

    async def started(self, stream_sid: str = "MZ0001", **kw: Any) -> str:
        kw.setdefault("call_sid", "CA1")
        started = StreamStarted(session_id=self.sid, stream_sid=stream_sid, **kw)
        await self.bus.publish(subjects.control(self.sid), started)
        await self.job(started)
        return turn_id_for_stream(stream_sid)

    async def escalation(self, status: EscalationStatus) -> None:
        """What the escalation service sends on a status change."""
        await self.bus.publish(subjects.escalation(self.sid), status)
        if status.spoken:
            await self.job(status)

    async def stopped(self, stream_sid: str | None = "MZ0001") -> None:
        await self.bus.publish(
            subjects.control(self.sid),
            StreamStopped(session_id=self.sid, call_sid="CA1", stream_sid=stream_sid),
        )

    def transcript(self, text: str, **kw: Any) -> Transcript:
        self.index += 1
        fields: dict[str, Any] = {
            "session_id": self.sid,
            "utterance_id": f"utt_{self.sid}_{self.index}",
            "text": text,
            "audio_ms": 900.0,
            "stt_ms": 120.0,
            "model": "tiny.en",
            "timings": TurnTimings(speech_end=1.0, transcript_published=2.0),
        }
        fields.update(kw)
        return Transcript(**fields)

    async def say(self, text: str, **kw: Any) -> str:
        t = self.transcript(text, **kw)
        await self.bus.publish_durable(subjects.transcript(self.sid), t)
        return turn_id_for_utterance(t.utterance_id)

    async def next_say(self) -> Say:
        return await asyncio.wait_for(self.says.get(), 30)

    async def turn(self, turn_id: str) -> list[Say]:
        """Every sentence of ``turn_id`` up to its last=True message."""
        out: list[Say] = []
        while True:
            say = await self.next_say()
            if say.turn_id != turn_id:
                continue
            out.append(say)
            if say.last:
                return out

    async def event(self, predicate: Callable[[Any], bool]) -> Any:
        while True:
            event = await asyncio.wait_for(self.events.get(), 30)
            if predicate(event):
                return event
