"""Caller speech: each transcript taken from the ``agent`` work queue becomes a turn, and
is acked only after the turn's sentences are published. The turn id comes from the
utterance id, so a redelivered transcript publishes under the same ``Nats-Msg-Id``s and
the ``say`` stream drops the repeats. Empty and noise transcripts start nothing."""

from __future__ import annotations

import asyncio

from nats.aio.msg import Msg
from pydantic import ValidationError

from dealerline_common import subjects
from dealerline_common.bus import Reject
from dealerline_common.conversation import turn_id_for_utterance
from dealerline_common.logs import get_logger
from dealerline_common.messages import Transcript, loads

from .metrics import AgentMetrics
from .sessions import Sessions
from .tasks import Tasks
from .turns import TurnInput, TurnResult, TurnRunner

log = get_logger(__name__)


def is_noise(transcript: Transcript, no_speech_max: float) -> bool:
    text = transcript.text.strip()
    if not any(ch.isalnum() for ch in text):
        return True
    return transcript.no_speech_prob is not None and transcript.no_speech_prob > no_speech_max


class Utterances:
    def __init__(
        self,
        runner: TurnRunner,
        sessions: Sessions,
        tasks: Tasks,
        metrics: AgentMetrics,
        no_speech_max: float,
    ) -> None:
        self.runner = runner
        self.sessions = sessions
        self.tasks = tasks
        self.metrics = metrics
        self.no_speech_max = no_speech_max

    async def on_transcript(self, msg: Msg) -> None:
        """One job of the work queue: return to ack, ``Reject`` to drop it."""
        try:
            transcript = loads(Transcript, msg.data)
            subjects.check_session_id(transcript.session_id)
        except (ValidationError, ValueError) as exc:
            raise Reject(f"bad transcript: {exc}") from exc
        sid = transcript.session_id
        if is_noise(transcript, self.no_speech_max):
            self.metrics.transcripts_ignored.inc()
            log.info("transcript ignored as noise", session_id=sid)
            return
        if self.sessions.hung_up(sid):
            log.info("transcript for a finished call", session_id=sid)
            return
        turn = TurnInput(
            turn_id=turn_id_for_utterance(transcript.utterance_id),
            text=transcript.text.strip(),
            utterance_id=transcript.utterance_id,
            timings=transcript.timings,
            caller_text=True,
        )
        task = self.tasks.spawn(
            self.runner.turn(sid, turn), name=f"turn:{turn.turn_id}", awaited=True
        )
        await await_turn(task)


async def await_turn(task: asyncio.Task[TurnResult]) -> None:
    """Wait for a turn; one cancelled by a barge-in or a hang-up is over (acked), while a
    cancellation of the waiter (drain) cancels the turn too."""
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            task.cancel()
            raise
