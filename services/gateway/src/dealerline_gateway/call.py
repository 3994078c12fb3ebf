"""The call an admitted media stream carries: its ids, what the signed webhook knew about it
(the :class:`~.tokens.StreamGrant` its one-time token is bound to), and its root span
``gateway.call`` (when tracing is on), which every other span and message of the stream
joins.

Everything about the caller (number, dialled number, CallSid) comes from the grant, never
from the stream's ``start.customParameters``: those travel through Twilio as the TwiML
wrote them, but a stream that presents a token could say anything there."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dealerline_common import tracing
from dealerline_common.logs import mask_phone

from .tokens import StreamGrant


@dataclass
class StreamCall:
    session_id: str
    stream_sid: str
    grant: StreamGrant
    from_number: str | None = None  # the signed webhook's From (the grant's)
    to_number: str | None = None
    span: tracing.Span = field(default=tracing.INVALID_SPAN)
    ctx: tracing.Context | None = None  # the call span's context (None when not tracing)

    @property
    def call_sid(self) -> str:
        return self.grant.call_sid

    @classmethod
    def open(
        cls, session_id: str, stream_sid: str, params: dict[str, Any], grant: StreamGrant
    ) -> StreamCall:
        """The call of a stream just admitted; starts its root span when tracing.
        ``params`` (the stream's customParameters) are not read: the grant is the truth."""
        call = cls(session_id, stream_sid, grant, grant.from_number, grant.to_number)
        if tracing.enabled():
            call.span = tracing.start_span(
                "gateway.call",
                context=tracing.Context(),  # a new trace: the call's root
                kind=tracing.SpanKind.SERVER,
                session_id=session_id,
                call_sid=grant.call_sid,
                stream_sid=stream_sid,
                resumed=grant.resumed,
                reason=grant.reason,
                caller=mask_phone(call.from_number),
            )
            call.ctx = tracing.context_with(call.span)
        return call

    def end_trace(self, reason: str) -> None:
        """End the call's span (idempotent)."""
        tracing.end_span(self.span, reason=reason)
        self.span = tracing.INVALID_SPAN
