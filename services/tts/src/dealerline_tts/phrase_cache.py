"""Short phrases already spoken, kept as the mu-law audio the worker publishes.

The first piece of most replies is an opener ("Sure,", "Okay,", "Let me check that for
you."): the agent cuts it off its first sentence so it can be spoken at once, and this
cache makes it free. Kokoro is deterministic for one text, voice and speed, so a cached
phrase is exactly what synthesis would make again.

Keys are (normalised text, voice, speed); only texts of at most ``max_chars`` characters
are kept, at most ``max_entries`` of them and ``max_bytes`` of audio in all, the least
recently used going first. The worker fills it before it takes work (``TTS_PREWARM``) and
with every short sentence it synthesizes. Not thread-safe: the worker uses it from its
event loop only.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple


class PhraseKey(NamedTuple):
    text: str
    voice: str
    speed: float


class PhraseCache:
    def __init__(
        self,
        voice: str,
        speed: float,
        *,
        max_chars: int = 40,
        max_entries: int = 512,
        max_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.voice = voice
        self.speed = speed
        self.max_chars = max_chars
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[PhraseKey, bytes] = OrderedDict()
        self._bytes = 0

    def key(self, text: str) -> PhraseKey | None:
        """The key of an already normalised text, or None when it is too long to keep."""
        text = text.strip()
        if not text or len(text) > self.max_chars or self.max_entries == 0:
            return None
        return PhraseKey(text, self.voice, self.speed)

    def cacheable(self, text: str) -> bool:
        return self.key(text) is not None

    def get(self, text: str) -> bytes | None:
        key = self.key(text)
        if key is None:
            return None
        audio = self._items.get(key)
        if audio is not None:
            self._items.move_to_end(key)
        return audio

    def put(self, text: str, audio: bytes) -> bool:
        """Keep ``audio`` for ``text``; returns whether it was kept (empty audio, a long
        text or audio larger than the whole budget is not)."""
        key = self.key(text)
        if key is None or not audio or len(audio) > self.max_bytes:
            return False
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= len(old)
        self._items[key] = audio
        self._bytes += len(audio)
        while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self._bytes -= len(evicted)
        return True

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, text: object) -> bool:
        key = self.key(text) if isinstance(text, str) else None
        return key is not None and key in self._items

    @property
    def bytes(self) -> int:
        """Audio bytes held."""
        return self._bytes
