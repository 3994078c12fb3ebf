"""uvicorn's WebSocket protocol (websockets, sans-I/O) with the close a socket under attack
needs.

Once the gateway has closed a socket (a flood, a refusal, a message over the limit),
uvicorn keeps reading and parsing whatever the peer sends until the peer's close reply
comes, for up to 10 s: a peer that floods and never replies would hold the event loop
that long after it was shut out. Here what the peer sends after the gateway's close is
dropped unparsed, and the connection ends at most ``CLOSE_TIMEOUT_S`` later. (uvicorn's
own class is used by name: its module path is internal, pinned by the lock file.)
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

CLOSE_TIMEOUT_S = 1.0


class GatewayWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.close_timeout = CLOSE_TIMEOUT_S

    def data_received(self, data: bytes) -> None:
        if self.close_sent and self.handshake_complete:
            return  # the gateway closed this socket: nothing more is read from it
        super().data_received(data)
