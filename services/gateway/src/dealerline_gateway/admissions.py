"""A CallSid is admitted once: the answer to its first ``/api/voice/incoming`` (the session
and the one-time stream token, as TwiML) is kept in a NATS KV bucket shared by every
gateway replica, and the same call asking again, on any replica, gets that same answer.

So a replayed signed webhook mints neither a new session nor a second working token: it
gets the first answer back, whose token works once (for Twilio, if its first answer was
lost; for nobody, once the call's stream used it). Two replicas answering the same call at
once race on ``create``: exactly one answer is recorded, and the loser serves it too.

The key is a digest of the CallSid. Entries live ``call_admission_ttl_s`` (the bucket's
max age), which must outlast any call: after it a replay would be a new call.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import nats.js.errors

from dealerline_common.bus import Bus
from dealerline_common.logs import get_logger

from .kv_bucket import LazyBucket

log = get_logger(__name__)

BUCKET = "dl_call_admissions"


@dataclass(frozen=True)
class Admission:
    """What the call's first ``/incoming`` answered."""

    session_id: str
    twiml: str


def _key(call_sid: str) -> str:
    return "c_" + hashlib.sha256(call_sid.encode()).hexdigest()


class CallAdmissions(LazyBucket):
    def __init__(self, bus: Bus, ttl_s: float, bucket: str = BUCKET) -> None:
        super().__init__(bus, bucket, ttl_s)

    async def get(self, call_sid: str) -> Admission | None:
        """The call's recorded answer, if any."""
        try:
            entry = await (await self.kv()).get(_key(call_sid))
        except nats.js.errors.KeyNotFoundError:  # includes KeyDeletedError
            return None
        if entry.value is None:
            return None
        try:
            return Admission(**json.loads(entry.value))
        except (ValueError, TypeError):
            log.warning("unreadable call admission entry")
            return None

    async def claim(self, call_sid: str, answer: Admission) -> Admission | None:
        """Record ``answer`` as the call's unless one is recorded already: None when
        ``answer`` is now the call's, else the answer recorded first (serve that one).
        Raises when the bucket cannot be reached (nothing is answered then)."""
        kv = await self.kv()
        try:
            await kv.create(_key(call_sid), json.dumps(asdict(answer)).encode())
            return None
        except nats.js.errors.KeyWrongLastSequenceError:
            pass
        first = await self.get(call_sid)
        if first is None:  # recorded, then unreadable or gone: never a second answer
            raise RuntimeError("call admitted already, but its answer cannot be read")
        return first
