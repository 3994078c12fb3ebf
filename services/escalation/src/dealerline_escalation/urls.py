"""The URLs the escalation hands to Twilio: this service's webhooks (per attempt, and the
conference's status callback) and the gateway's TwiML that moves the caller into the
conference or back to the AI."""

from __future__ import annotations

from urllib.parse import urlencode


class Urls:
    def __init__(self, public_url: str, gateway_url: str) -> None:
        # Unset only in a fleet without a phone line, where no call is ever placed.
        self.public_url = public_url
        self.gateway_url = gateway_url

    def webhook_url(self, route: str, **params: str | int) -> str:
        return f"{self.public_url}/api/voice/{route}?{urlencode(params)}"

    def attempt_url(self, route: str, session_id: str, task_id: str, attempt: int) -> str:
        return self.webhook_url(route, session_id=session_id, task_id=task_id, attempt=attempt)

    def conference_status_url(self, session_id: str) -> str:
        return self.webhook_url("conference-status", session_id=session_id)

    def escalate_url(self, session_id: str) -> str:
        q = urlencode({"session_id": session_id})
        return f"{self.gateway_url}/api/voice/escalate?{q}"

    def return_url(self, session_id: str, reason: str) -> str:
        q = urlencode({"session_id": session_id, "reason": reason})
        return f"{self.gateway_url}/api/voice/return-to-ai?{q}"
