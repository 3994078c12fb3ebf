"""Speaking a turn: each sentence is published on ``call.<sid>.say`` as soon as it is
ready, then a closing ``last=True`` message that says what the turn asks the caller for
(``expects``). Each carries ``Nats-Msg-Id`` ``<turn>:<seq>``, so a redelivered or
replayed turn publishes nothing twice.

With a state store, each sentence is noted there (``note_reply``) before it is published:
an agent that dies mid-reply leaves the words the caller may have heard, and the replica
that takes the turn over continues after them (:mod:`.resume`) instead of starting a
second, differently worded reply."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.messages import Say, TurnTimings, now
from dealerline_common.speculation import Expects
from dealerline_common.state_store import StateStore

from .metrics import AgentMetrics


class TurnVoice:
    """The sentences of one turn, numbered in the order they are said."""

    def __init__(
        self,
        bus: Bus,
        metrics: AgentMetrics,
        session_id: str,
        turn_id: str,
        utterance_id: str | None,
        timings: TurnTimings,
        *,
        store: StateStore | None = None,
        voice: str | None = None,
    ) -> None:
        self.bus = bus
        self.metrics = metrics
        self.session_id = session_id
        self.turn_id = turn_id
        self.utterance_id = utterance_id
        self.timings = timings
        self.store = store  # notes each sentence before it goes out; None: not noted
        self.voice = voice  # the profile's TTS voice; None: the TTS service's default
        self.seq = 0  # sentences said so far
        self.spoken: list[str] = []  # their texts

    @property
    def text(self) -> str:
        """Everything this turn has said so far."""
        return " ".join(self.spoken)

    async def say(self, text: str) -> None:
        if text and self.store is not None:
            await self.store.note_reply(self.session_id, self.turn_id, self.seq, text)
        await self._say(text)

    async def resume(self, said: Iterable[str]) -> None:
        """Take over a reply an earlier delivery started: its noted sentences count as
        said, and are published again under their own ids (the stream drops those it
        already has, so one noted but never published still reaches the caller)."""
        for sentence in said:
            await self._say(sentence)

    async def _say(self, text: str) -> None:
        if self.seq == 0 and text:
            self.timings.first_sentence = now()
            if self.timings.llm_request is not None:
                self.metrics.first_sentence.observe(
                    self.timings.first_sentence - self.timings.llm_request
                )
        if text:
            self.spoken.append(text)
        await self._publish(text, last=False)
        self.seq += 1

    async def say_all(self, sentences: Iterable[str]) -> None:
        for sentence in sentences:
            await self.say(sentence)

    async def end(self, expects: Expects | None = None) -> None:
        """The turn's closing message: nothing more will be said, and the caller is
        expected to answer with ``expects`` (None: anything)."""
        await self._publish("", last=True, expects=expects)

    async def _publish(self, text: str, *, last: bool, expects: Expects | None = None) -> None:
        say = Say(
            session_id=self.session_id,
            turn_id=self.turn_id,
            utterance_id=self.utterance_id,
            seq=self.seq,
            text=text,
            last=last,
            timings=self.timings.model_copy(),
            expects=expects,
            voice=self.voice,
        )
        await self.bus.publish_durable(
            subjects.say(self.session_id), say, msg_id=f"{self.turn_id}:{self.seq}"
        )
        raise_if_cancelled()


def raise_if_cancelled() -> None:
    """Re-raise a cancellation that an awaited call swallowed.

    nats-py awaits the JetStream ack with ``asyncio.wait_for``, which on Python 3.11
    drops a cancellation that lands as the ack arrives; the task still counts it in
    ``cancelling()``, so a barge-in is honoured at the next sentence at the latest.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
