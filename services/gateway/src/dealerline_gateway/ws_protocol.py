"""uvicorn's WebSocket protocol (websockets, sans-I/O) with the close a socket under attack
needs.

Once the gateway has closed a socket (a flood, a refusal, a message over the limit),
uvicorn keeps reading and parsing whatever the peer sends until the peer's close reply
comes, for up to 10 s: a peer that floods and never replies would hold the event loop
that long after it was shut out. Here the first data the peer sends after the gateway's
close (its close reply, or more of its flood) ends the connection at once, unparsed, and
a peer that sends nothing is cut off ``CLOSE_TIMEOUT_S`` after the close. (uvicorn's own
class is extended by its module path, an internal one, pinned by the lock file.)
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
            self.transport.close()  # after our close frame (written first), nothing more
            return
        super().data_received(data)
