"""``WS /api/voice/media-stream``: Twilio's bidirectional media stream. A handshake that
carries ``X-Twilio-Signature`` must be signed over the public ``wss://`` URL (when
``validate_ws_signature`` is on); each stream is then one :class:`~.stream.MediaSession`."""

from __future__ import annotations

from urllib.parse import urlsplit

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
    if (
        settings.validate_ws_signature
        and "x-twilio-signature" in websocket.headers
        and not gw.signatures.valid(websocket, {}, scheme=urlsplit(settings.stream_url).scheme)
    ):
        gw.gm.signature_failures.labels("media-stream").inc()
        log.warning("media-stream handshake signature rejected")
        await websocket.close(code=POLICY_VIOLATION)
        return
    await MediaSession(gw.stream_deps, websocket).run()
