"""The bus client every service uses: nats-py with reconnect, headers, queue groups,
JetStream work consumers with explicit ack, and streams created idempotently at start.

Two lanes:
- core NATS (``publish`` / ``subscribe``) for what is live and may be lost with the call:
  audio to the gateway, control messages;
- JetStream (``publish_durable`` / ``work``) for work that must survive a worker dying:
  utterances, transcripts, sentences to speak, escalation requests, dashboard events.

Trace context rides in the headers (see :mod:`dealerline_common.tracing`): every publish
carries the ``traceparent`` of the span active at the time, every handler runs with the
context its message carried, and each work job gets a consumer span, so a handler's spans
and publishes continue the call's trace without any code of its own. With tracing off
none of this runs.

Drain (``stop_consuming``): work loops stop pulling, a job that arrives on a pull already
in flight is handed straight back (nak without delay, so another replica takes it now,
not after ``ack_wait``), jobs in progress get until the deadline to finish, and those
still running then are cancelled and handed back too.

- :mod:`.client`: :class:`Bus`, the connection and both lanes;
- :mod:`.auth`: :class:`NatsAuth`, the connection's credentials and TLS;
- :mod:`.permissions`: what each service's NATS user may publish and subscribe to;
- :mod:`.work`: :class:`WorkConsumer` (pull loops, settling, drain) and :class:`Reject`;
- :mod:`.lease`: a job's answered in-progress heartbeats, and cancelling it once they
  went unanswered long enough that another replica may own it;
- :mod:`.consumers`: a work consumer created, or updated to the service's settings;
- :mod:`.publish`: durable publishing through an outage, counted core drops;
- :mod:`.startup`: waiting for NATS and JetStream at start-up;
- :mod:`.streams`: the fleet's JetStream streams and key-value buckets;
- :mod:`.received`: reading a delivered message (payload, headers, JetStream stamp).
"""

from .auth import NatsAuth
from .client import Bus, BusConnectError
from .received import headers_of, msg_payload, published_at
from .startup import BusAuthError
from .streams import STREAMS, MiB, StreamSpec
from .work import Handler, Reject, WorkConsumer

__all__ = [
    "STREAMS",
    "Bus",
    "BusAuthError",
    "BusConnectError",
    "Handler",
    "MiB",
    "NatsAuth",
    "Reject",
    "StreamSpec",
    "WorkConsumer",
    "headers_of",
    "msg_payload",
    "published_at",
]
