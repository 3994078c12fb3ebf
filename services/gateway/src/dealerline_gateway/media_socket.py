"""``WS /api/voice/media-stream``: Twilio's bidirectional media stream. Every handshake
must carry ``X-Twilio-Signature`` signed over the public ``wss://`` URL (refused with 403
otherwise; ``allow_unsigned_streams`` serves an unsigned one, for local development only:
a forged signature is refused all the same). Each stream is then one
:class:`~.stream.MediaSession`, admitted only with the call's one-time token."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from dealerline_common.logs import get_logger

from .gateway import Gateway
from .stream import POLICY_VIOLATION, MediaSession

log = get_logger(__name__)

router = APIRouter()


@router.websocket("/api/voice/media-stream")
async def media_stream(websocket: WebSocket) -> None:
    gw: Gateway = websocket.app.state.gateway
    settings = gw.settings
    signed = "x-twilio-signature" in websocket.headers
    unsigned_allowed = settings.allow_unsigned_streams and not signed
    if not unsigned_allowed and not gw.signatures.valid(websocket, {}, websocket=True):
        gw.gm.signature_failures.labels("media-stream").inc()
        log.warning("media-stream handshake signature rejected", has_signature=signed)
        await websocket.close(code=POLICY_VIOLATION)
        return
    await MediaSession(gw.stream_deps, websocket).run()
