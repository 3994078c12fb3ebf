"""The agent's Prometheus metrics."""

from __future__ import annotations

from dealerline_common.metrics import Metrics


class AgentMetrics:
    def __init__(self, metrics: Metrics | None = None) -> None:
        self.base = metrics or Metrics()
        m = self.base
        self.turns = m.counter(
            "agent_turns_total", "Agent turns by result", ["result"]
        )  # ok | cancelled | error | replayed
        self.turns_cancelled = m.counter(
            "agent_turns_cancelled_total", "Turns cancelled (barge-in or hang-up)", ["reason"]
        )
        self.transcripts_ignored = m.counter(
            "agent_transcripts_ignored_total", "Transcripts dropped as empty or noise"
        )
        self.llm_first_token = m.histogram(
            "agent_llm_first_token_seconds", "From the LLM request to its first content token"
        )
        self.turn_duration = m.histogram(
            "agent_turn_duration_seconds", "From taking a turn to its last sentence published"
        )
        self.first_sentence = m.histogram(
            "agent_first_sentence_seconds", "From the LLM request to the first sentence published"
        )
        self.active_sessions = m.gauge("agent_active_sessions", "Sessions with state in memory")
        self.control_ignored = m.counter(
            "agent_control_ignored_total",
            "Control messages ignored as stale (a stop or start of an earlier stream)",
            ["reason"],
        )  # stale_stop | stale_start
        self.llm_failures = m.counter(
            "agent_llm_failures_total", "LLM calls that failed or were too slow", ["kind"]
        )
        self.llm_fallbacks = m.counter(
            "agent_llm_fallbacks_total",
            "Apologies spoken after the LLM failed twice, by where the words came from",
            ["source"],
        )  # model | cached | last_resort
        self.tool_calls = m.counter("agent_tool_calls_total", "Tool calls by tool", ["tool"])
        self.state_conflicts = m.counter(
            "agent_state_conflicts_total", "Turn commits that lost the optimistic lock for good"
        )
        self.escalations = m.counter(
            "agent_escalation_turns_total", "Turns spoken on an escalation status", ["status"]
        )
        self.verification_locked = m.counter(
            "agent_verification_locked_total",
            "Fact checks or code sends refused by a customer's limit across calls",
            ["kind"],
        )  # fact | code
