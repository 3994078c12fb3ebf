"""What a simulated caller says: a line of text with explicit pauses, or recorded audio.

A line may hold pause marks: ``"five five five <pause 800> one two three <pause 900> four
five six seven"``. Each chunk between marks is synthesized on its own (Kokoro, cached), its
leading and trailing quiet is trimmed to one 20 ms frame, and exactly the given
milliseconds of mu-law silence go between chunks, so a pause of 800 ms is 800 ms (±20 ms)
from the last voiced frame of one chunk to the first voiced frame of the next.
:class:`Recorded` is audio said as it is (a dev-set case's 8 kHz mu-law).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from dealerline_common.audio import FRAME_BYTES, FRAME_MS, ULAW_SILENCE, frames, rms, ulaw_to_pcm16
from dealerline_sim.voice import synthesize_ulaw

__all__ = [
    "MAX_PAUSE_MS",
    "PAUSE_MARK",
    "Recorded",
    "SpokenLine",
    "has_pauses",
    "parse_line",
    "spoken_text",
    "synthesize_line",
]

PAUSE_MARK: Final = re.compile(r"<\s*pause\s+(\d+(?:\.\d+)?)\s*(?:ms)?\s*>", re.IGNORECASE)
MAX_PAUSE_MS: Final = 30_000.0
# A 20 ms frame louder than this (PCM16 RMS) is speech for trimming and pause spans; the
# caller line's VOICED_RMS uses the same level for ``speech_ended_at``.
_VOICED_RMS: Final = 300.0


@dataclass(frozen=True)
class Recorded:
    """Audio the caller says as it is: 8 kHz mu-law, ``text`` what it says (if known),
    ``onset_ms`` where its speech begins (if known: line noise may come first)."""

    audio: bytes
    text: str | None = None
    onset_ms: float | None = None

    def __post_init__(self) -> None:
        if not self.audio:
            raise ValueError("recorded audio is empty")
        if self.onset_ms is not None and not 0 <= self.onset_ms < len(self.audio) / 8.0:
            raise ValueError(f"onset_ms {self.onset_ms} lies outside the audio")


@dataclass(frozen=True)
class SpokenLine:
    """A line made ready to say: its words (pause marks removed), the audio, the pauses."""

    text: str
    audio: bytes
    pauses_ms: tuple[float, ...]
    # (start, end) of each inserted pause in ms from the start of ``audio``: the last voiced
    # frame of a chunk ends at ``start``, the next chunk's first voiced frame begins at ``end``.
    pause_spans_ms: tuple[tuple[float, float], ...]


def has_pauses(text: str) -> bool:
    return PAUSE_MARK.search(text) is not None


def parse_line(text: str) -> list[tuple[str, float]]:
    """``[(chunk text, pause after in ms), ...]``; the last chunk's pause is 0.

    Raises ``ValueError`` for a line with no words, an empty chunk between two marks, or a
    pause over :data:`MAX_PAUSE_MS`.
    """
    chunks: list[tuple[str, float]] = []
    pos = 0
    for m in PAUSE_MARK.finditer(text):
        words = text[pos : m.start()].strip()
        pause = float(m.group(1))
        if pause > MAX_PAUSE_MS:
            raise ValueError(f"pause of {pause:g} ms is longer than {MAX_PAUSE_MS:g} ms")
        if not words:
            if not chunks:
                raise ValueError(f"a line cannot start with a pause: {text!r}")
            raise ValueError(f"two pauses with no words between them: {text!r}")
        chunks.append((words, pause))
        pos = m.end()
    tail = text[pos:].strip()
    if tail:
        chunks.append((tail, 0.0))
    elif chunks:
        raise ValueError(f"a line cannot end with a pause: {text!r}")
    if not chunks:
        raise ValueError("a line needs words")
    return chunks


def spoken_text(text: str) -> str:
    """The words of a line, pause marks removed."""
    return " ".join(" ".join(words.split()) for words, _ in parse_line(text))


def _voiced_range(audio: bytes) -> tuple[int, int]:
    """Index of the first and last voiced 20 ms frame (0, -1 when none is voiced)."""
    flags = [rms(ulaw_to_pcm16(f)) > _VOICED_RMS for f in frames(audio)]
    voiced = [i for i, v in enumerate(flags) if v]
    if not voiced:
        return 0, -1
    return voiced[0], voiced[-1]


def _trim(audio: bytes) -> tuple[bytes, int, int]:
    """The audio from one frame before its first voiced frame to one after its last;
    returns it with the first and last voiced frame's index within it."""
    parts = frames(audio)
    first, last = _voiced_range(audio)
    if last < first:
        return b"".join(parts), 0, len(parts) - 1
    lo, hi = max(0, first - 1), min(len(parts) - 1, last + 1)
    return b"".join(parts[lo : hi + 1]), first - lo, last - lo


async def synthesize_line(text: str, voice: str, speed: float = 1.0) -> SpokenLine:
    """Synthesize ``text`` (with pause marks) as one stretch of 8 kHz mu-law; the silence
    between two chunks' voiced frames is the pause asked for (to the 20 ms frame)."""
    chunks = parse_line(text)
    if len(chunks) == 1:
        audio = await synthesize_ulaw(chunks[0][0], voice, speed)
        return SpokenLine(spoken_text(text), audio, (), ())
    trimmed = [_trim(await synthesize_ulaw(words, voice, speed)) for words, _ in chunks]
    out = bytearray()
    spans: list[tuple[float, float]] = []
    pauses: list[float] = []
    for i, (audio, _first, last) in enumerate(trimmed):
        out += audio
        if i == len(chunks) - 1:
            break
        pause_ms = chunks[i][1]
        frames_after = len(audio) // FRAME_BYTES - 1 - last  # quiet kept after the speech
        frames_before = trimmed[i + 1][1]  # quiet kept before the next chunk's speech
        start_ms = len(out) / 8.0 - frames_after * FRAME_MS
        gap_ms = max(0.0, pause_ms - (frames_after + frames_before) * FRAME_MS)
        out += bytes([ULAW_SILENCE]) * int(round(gap_ms * 8))
        spans.append((start_ms, len(out) / 8.0 + frames_before * FRAME_MS))
        pauses.append(pause_ms)
    return SpokenLine(spoken_text(text), bytes(out), tuple(pauses), tuple(spans))
