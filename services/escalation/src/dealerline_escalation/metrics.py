"""The escalation service's Prometheus metrics (one set per process, shared by the
webhooks, the write path and every running escalation)."""

from __future__ import annotations

from dealerline_common.metrics import Metrics


class EscalationMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.escalations = metrics.counter(
            "escalation_requests_total", "Escalation requests by how they were taken", ["kind"]
        )
        self.outcomes = metrics.counter(
            "escalation_outcomes_total",
            "Escalations ended, by final status and reason",
            ["status", "reason"],
        )
        self.attempts = metrics.counter(
            "escalation_attempts_total", "Human calls placed (one per person rung)"
        )
        self.attempt_failures = metrics.counter(
            "escalation_attempt_failures_total", "Human calls that failed, by reason", ["reason"]
        )
        self.transitions = metrics.counter(
            "escalation_transitions_total", "Human-call status changes", ["status"]
        )
        self.refused = metrics.counter(
            "escalation_illegal_transitions_total", "Transitions the state machine refused"
        )
        self.stale = metrics.counter(
            "escalation_stale_callbacks_total",
            "Status callbacks ignored as older than one already applied",
        )
        self.signature_failures = metrics.counter(
            "escalation_signature_failures_total",
            "Webhooks with a bad X-Twilio-Signature",
            ["route"],
        )
        self.watchdog_fixes = metrics.counter(
            "escalation_watchdog_corrections_total",
            "Changes the watchdog applied that no callback had reported",
        )
        self.active = metrics.gauge("escalation_active", "Escalations this replica owns")
        self.staff_actions = metrics.counter(
            "escalation_staff_actions_total",
            "Claims and passes from the dashboard, by whether they were accepted",
            ["action", "outcome"],
        )
        self.dial_refusals = metrics.counter(
            "escalation_dial_refusals_total",
            "People not rung because the database does not have the number as an on-duty "
            "staff member's, by reason",
            ["reason"],
        )
        self.duty_removals = metrics.counter(
            "escalation_duty_removals_total",
            "People taken off a running escalation's list because they went off duty",
        )
