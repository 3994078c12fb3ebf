"""Everything the gateway writes to Twilio's socket for one call, one writer at a time.

The ``sender`` task takes the reply's sentences from :class:`~.playback.Playback` in
order and sends each as ``media`` chunks of ``playback_frames_per_chunk`` 20 ms frames
followed by its ``mark``; before every chunk it checks the sentence is still playable
(a barge-in or a newer turn stops it mid-sentence). Sending is paced on the audio's own
clock: a chunk goes out once what Twilio still has to play is at most
``playback_lead_ms``, so a *hold* (the caller speaks over us: no new chunk until resumed)
silences the line after at most that plus one chunk, and resuming plays on from the
same frame. The marks Twilio echoes tell :class:`~.playback.Playback` what was heard.
``clear`` (barge-in) and closing the socket (hang-up, a failed task) take the same lock,
so they never land in the middle of a chunk. A sentence that fails to send is counted and
skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from dealerline_common import audio, tracing
from dealerline_common.logs import get_logger

from . import codec
from .call import StreamCall
from .playback import Playback, Sentence
from .telemetry import GatewayMetrics

log = get_logger(__name__)


class Sender:
    def __init__(
        self,
        ws: WebSocket,
        call: StreamCall,
        playback: Playback,
        gm: GatewayMetrics,
        frames_per_chunk: int,
        on_first_media: Callable[[Sentence], None],
        lead_ms: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``on_first_media(sentence)`` is called once the first chunk of a turn went out."""
        self._ws = ws
        self._call = call
        self._playback = playback
        self._gm = gm
        self._per_chunk = frames_per_chunk
        self._on_first_media = on_first_media
        self._lead_s = lead_ms / 1000.0
        self._clock = clock
        self._play_until = 0.0  # (clock) when Twilio will have played all we sent
        self._lock = asyncio.Lock()

    async def run(self) -> None:
        """The ``sender`` task: play each sentence as it is released, until cancelled."""
        while True:
            sentence = await self._playback.queue.get()
            try:
                await self._send_sentence(sentence)
            except Exception:
                # One bad sentence (e.g. its turn was forgotten meanwhile) is skipped; the
                # sender goes on with the next one.
                self._gm.playback_drops.labels("send_error").inc()
                log.exception(
                    "sentence not sent; skipped",
                    session_id=self._call.session_id,
                    turn_id=sentence.turn_id,
                    seq=sentence.seq,
                )
            finally:
                self._playback.finished_sending(sentence)

    async def clear(self) -> None:
        """Drop what Twilio has buffered (barge-in)."""
        async with self._lock:
            await self._send(codec.encode_clear(self._call.stream_sid))
            self._play_until = 0.0

    @property
    def buffered_s(self) -> float:
        """Audio sent that Twilio has not played yet (by the pacing clock)."""
        return max(0.0, self._play_until - self._clock())

    async def close(self, code: int) -> None:
        """Close the socket between two writes (errors ignored: it may be gone already)."""
        async with self._lock:
            with contextlib.suppress(Exception):
                await self._ws.close(code=code)

    async def _send_sentence(self, sentence: Sentence) -> None:
        with tracing.span(
            "gateway.playback",
            context=sentence.trace_ctx or self._call.ctx,
            session_id=self._call.session_id,
            turn_id=sentence.turn_id,
            seq=sentence.seq,
            audio_ms=sentence.duration_ms,
        ) as sp:
            sent = await self._send_chunks(sentence)
            if sp.is_recording():
                sp.set_attribute("outcome", "played" if sent else "cancelled")

    async def _send_chunks(self, sentence: Sentence) -> bool:
        """Media then a mark; False when the sentence stopped being playable meanwhile."""
        stream_sid = self._call.stream_sid
        encode_media = codec.media_encoder(stream_sid)
        for chunk in audio.chunks(sentence.audio, self._per_chunk):
            while True:
                await self._paced()
                async with self._lock:
                    if not self._playback.playable(sentence):
                        self._gm.playback_drops.labels("cancelled").inc()
                        return False
                    if self._playback.held:
                        continue  # held while we waited: wait for the resume
                    await self._send(encode_media(chunk))
                    chunk_ms = audio.duration_ms(chunk)
                    self._played_more(chunk_ms / 1000.0)
                    if self._playback.sent_chunk(sentence, time.time(), chunk_ms):
                        self._on_first_media(sentence)
                    break
        async with self._lock:
            if not self._playback.playable(sentence):
                return False
            await self._send(codec.encode_mark(stream_sid, sentence.mark_name))
            self._playback.sent_mark(sentence)
        return True

    async def _paced(self) -> None:
        """Until playback is not held and Twilio has at most the lead left to play."""
        while True:
            await self._playback.wait_unheld()
            wait = self._play_until - self._lead_s - self._clock()
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    def _played_more(self, seconds: float) -> None:
        self._play_until = max(self._play_until, self._clock()) + seconds

    async def _send(self, text: str) -> None:
        if self._ws.application_state != WebSocketState.CONNECTED:
            return
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await self._ws.send_text(text)
