"""Short phrases already spoken, kept as the mu-law audio the worker publishes.

The first piece of most replies is an opener ("Sure,", "Okay,", "Let me check that for
you."): the agent cuts it off its first sentence so it can be spoken at once, and this
cache makes it free. Kokoro is deterministic for one text, voice and speed, so a cached
phrase is exactly what synthesis would make again.

Keys are (normalised text, voice, speed): the worker's voice unless a ``Say`` asks for
another one the model has (the dealership's profile); only texts of at most ``max_chars`` characters
are kept, at most ``max_entries`` of them and ``max_bytes`` of audio in all, the least
recently used going first. The worker fills it before it takes work (``TTS_PREWARM``) and
with every short sentence it synthesizes. Not thread-safe: the worker uses it from its
event loop only.

:meth:`PhraseCache.save` and :meth:`PhraseCache.load` keep the pre-warmed phrases in a
file between starts of a worker on one machine; the file's name must say everything the
audio depends on (the worker names it by a digest of the model files, versions, voice
and settings), so a file is either exactly right or not found.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

from dealerline_common.logs import get_logger

log = get_logger(__name__)

_MAGIC = b"DLPHRASES1"
_HEADER = struct.Struct(">I")  # length of the JSON index that follows the magic


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
        max_chars: int = 80,
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

    def key(self, text: str, voice: str | None = None) -> PhraseKey | None:
        """The key of an already normalised text in ``voice`` (None: the cache's own), or
        None when it is too long to keep."""
        text = text.strip()
        if not text or len(text) > self.max_chars or self.max_entries == 0:
            return None
        return PhraseKey(text, voice or self.voice, self.speed)

    def cacheable(self, text: str) -> bool:
        return self.key(text) is not None

    def get(self, text: str, voice: str | None = None) -> bytes | None:
        key = self.key(text, voice)
        if key is None:
            return None
        audio = self._items.get(key)
        if audio is not None:
            self._items.move_to_end(key)
        return audio

    def put(self, text: str, audio: bytes, voice: str | None = None) -> bool:
        """Keep ``audio`` for ``text`` in ``voice`` (None: the cache's own); returns whether
        it was kept (empty audio, a long text or audio larger than the whole budget is
        not)."""
        key = self.key(text, voice)
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

    def save(self, path: Path) -> None:
        """Write every phrase held in the cache's own voice to ``path`` (atomically: a
        reader sees the old file or the new one, never half of one); the file's name says
        the voice, so phrases in other voices are not kept in it."""
        items = [(k, audio) for k, audio in self._items.items() if k.voice == self.voice]
        index = json.dumps([[k.text, len(audio)] for k, audio in items]).encode()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_MAGIC + _HEADER.pack(len(index)) + index)
                for _, audio in items:
                    f.write(audio)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load(self, path: Path) -> int:
        """Add the phrases saved in ``path``; returns how many. A missing file adds
        nothing; an unreadable one is logged and adds nothing."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            log.warning("phrase file unreadable", path=str(path), error=str(exc))
            return 0
        try:
            entries = _parse(data)
        except ValueError as exc:
            log.warning("phrase file ignored", path=str(path), error=str(exc))
            return 0
        return sum(1 for text, audio in entries if self.put(text, audio))


def _parse(data: bytes) -> list[tuple[str, bytes]]:
    if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + _HEADER.size:
        raise ValueError("not a phrase file")
    start = len(_MAGIC) + _HEADER.size
    (size,) = _HEADER.unpack_from(data, len(_MAGIC))
    index = json.loads(data[start : start + size])  # a JSONDecodeError is a ValueError
    offset = start + size
    entries = []
    for text, length in index:
        if not isinstance(text, str) or not isinstance(length, int) or length <= 0:
            raise ValueError("bad phrase index")
        entries.append((text, data[offset : offset + length]))
        offset += length
    if offset != len(data):
        raise ValueError("phrase file has the wrong length")
    return entries
