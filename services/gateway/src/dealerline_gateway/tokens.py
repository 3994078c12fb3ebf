"""One-time media-stream tokens in the NATS KV bucket, so any gateway replica can admit
the stream of a call whose webhook another replica answered.

The key is the SHA-256 of the token (the token itself only travels in the TwiML);
admitting reads the entry, checks it names the same session and call, then deletes it
with ``last=revision``: of two streams presenting one token, exactly one wins.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import asdict, dataclass

import nats.errors
import nats.js.errors

from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.logs import get_logger

from .kv_bucket import LazyBucket

log = get_logger(__name__)


@dataclass(frozen=True)
class StreamGrant:
    """What the webhook knew about the call when it issued the token."""

    session_id: str
    call_sid: str
    from_number: str | None = None
    to_number: str | None = None
    resumed: bool = False
    reason: str | None = None
    issued_at: float = 0.0


def _key(token: str) -> str:
    return "t_" + hashlib.sha256(token.encode()).hexdigest()


class TokenStore(LazyBucket):
    def __init__(self, bus: Bus, ttl_s: float, bucket: str = subjects.KV_STREAM_TOKENS) -> None:
        super().__init__(bus, bucket, ttl_s)

    async def issue(self, grant: StreamGrant) -> str:
        token = secrets.token_urlsafe(24)
        body = asdict(grant) | {"issued_at": time.time()}
        await (await self.kv()).put(_key(token), json.dumps(body).encode())
        return token

    async def revoke(self, token: str) -> None:
        """Forget a token that was never handed out (errors ignored: it expires anyway)."""
        try:
            await (await self.kv()).delete(_key(token))
        except Exception:
            log.warning("unused stream token not revoked; it expires with its TTL")

    async def admit(self, token: str, session_id: str, call_sid: str) -> StreamGrant | None:
        """The grant for ``token`` if it is valid for this session and call, used up now;
        None if it is unknown, used, expired, or names another call (whose token is then
        not used up)."""
        if not token or len(token) > 256 or not call_sid:
            return None
        kv = await self.kv()
        key = _key(token)
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:  # includes KeyDeletedError
            return None
        if entry.value is None:
            return None
        try:
            grant = StreamGrant(**json.loads(entry.value))
        except (ValueError, TypeError):
            log.warning("unreadable stream token entry")
            return None
        if grant.session_id != session_id or grant.call_sid != call_sid:
            log.warning("stream token presented for another call", session_id=session_id)
            return None
        try:
            await kv.delete(key, last=entry.revision)
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.APIError):
            return None  # another stream used it first
        except nats.errors.TimeoutError:
            return None
        if time.time() - grant.issued_at > self.ttl_s:
            return None
        return grant
