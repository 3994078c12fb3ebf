"""The agent's durable jobs (``call.<sid>.agent_job``, the ``DL_AGENT_JOBS`` work queue):
the turns the agent must take even if the replica that would have taken them dies, or no
agent is up when they are asked for.

- ``CallIncoming`` (from the gateway's incoming webhook): the call's greeting;
- ``StreamStarted`` (from the gateway, as the stream opens): the stream's greeting, or
  nothing when the gateway holds the webhook's;
- ``EscalationStatus`` (from the escalation service, only statuses the agent speaks):
  the proactive turn on a person accepting the call or nobody being reached.

A job is acked once its turn's sentences are published (the handler returns then); a
replica that dies first leaves it to another after ``ack_wait``, which takes the same turn
id, so the sentences it publishes again are dropped by the ``say`` stream. The same
messages also go out on the core subjects (control, escalation) for everyone else: every
replica records the streams it hears, the gateway and the dashboard follow the statuses.
"""

from __future__ import annotations

from nats.aio.msg import Msg
from pydantic import ValidationError

from dealerline_common import subjects
from dealerline_common.bus import Reject
from dealerline_common.logs import get_logger
from dealerline_common.messages import CallIncoming, StreamStarted, parse_agent_job

from .escalation_turns import EscalationTurns
from .greeting import Greeter

log = get_logger(__name__)


class AgentJobs:
    def __init__(self, greeter: Greeter, escalation_turns: EscalationTurns) -> None:
        self.greeter = greeter
        self.escalation_turns = escalation_turns

    async def on_job(self, msg: Msg) -> None:
        """One job of the work queue: return to ack, ``Reject`` to drop it."""
        try:
            job = parse_agent_job(msg.data)
            subjects.check_session_id(job.session_id)
        except (ValidationError, ValueError) as exc:
            raise Reject(f"bad agent job: {exc}") from exc
        if msg.subject != subjects.agent_job(job.session_id):
            raise Reject("agent job on another call's subject")
        if isinstance(job, CallIncoming):
            await self.greeter.incoming(job)
        elif isinstance(job, StreamStarted):
            await self.greeter.stream_started(job)
        else:
            await self.escalation_turns.take(job)
