"""What a development-set case says: its chunks of speech (the caller pauses between two
chunks), what the agent just asked for, and the entity it carries.

Spoken forms are written out by hand in :mod:`.cases`; VINs are built here from a base with
the check digit computed (position 9, ISO 3779 / 49 CFR 565), so that every VIN in the set
is valid and spoken exactly as its characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from dealerline_common.speculation import Expects

Kind = Literal["pause", "short", "backchannel", "interruption"]
KINDS: tuple[Kind, ...] = ("pause", "short", "backchannel", "interruption")

PAUSE_MARK = " | "

_VIN_VALUES = {
    **{str(d): d for d in range(10)},
    **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
    **dict(zip("JKLMN", range(1, 6), strict=True)),
    "P": 7,
    "R": 9,
    **dict(zip("STUVWXYZ", range(2, 10), strict=True)),
}
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
_VIN_CHARS = re.compile(r"^[A-HJ-NPR-Z0-9]{17}$")

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
NATO = {
    "A": "Alpha",
    "B": "Bravo",
    "C": "Charlie",
    "D": "Delta",
    "E": "Echo",
    "F": "Foxtrot",
    "G": "Golf",
    "H": "Hotel",
    "J": "Juliet",
    "K": "Kilo",
    "L": "Lima",
    "M": "Mike",
    "N": "November",
    "P": "Papa",
    "R": "Romeo",
    "S": "Sierra",
    "T": "Tango",
    "U": "Uniform",
    "V": "Victor",
    "W": "Whiskey",
    "X": "X-ray",
    "Y": "Yankee",
    "Z": "Zulu",
}


def vin_check_digit(vin: str) -> str:
    """The check digit (``0``-``9`` or ``X``) of a 17-character VIN; position 9 is ignored."""
    vin = vin.upper()
    if len(vin) != 17:
        raise ValueError(f"a VIN has 17 characters, got {len(vin)}")
    try:
        total = sum(_VIN_VALUES[c] * w for c, w in zip(vin, _VIN_WEIGHTS, strict=True))
    except KeyError as exc:
        raise ValueError(f"{exc.args[0]!r} is not a VIN character") from exc
    rest = total % 11
    return "X" if rest == 10 else str(rest)


def vin_is_valid(vin: str) -> bool:
    """17 VIN characters (no I, O, Q) with the right check digit at position 9."""
    vin = vin.upper()
    return bool(_VIN_CHARS.match(vin)) and vin[8] == vin_check_digit(vin)


def make_vin(base: str) -> str:
    """``base`` with ``?`` at position 9 → the valid VIN (the check digit put in)."""
    if len(base) != 17 or base[8] != "?":
        raise ValueError("the base is 17 characters with '?' at position 9")
    vin = base[:8] + vin_check_digit(base[:8] + "0" + base[9:]) + base[9:]
    if not vin_is_valid(vin):
        raise ValueError(f"{base!r} holds characters a VIN cannot have")
    return vin


def spell(chars: str, *, nato: str = "", zero: str = "zero") -> str:
    """Characters as a caller reads them: digits as words, letters as capitals (or as NATO
    words for the letters in ``nato``)."""
    words: list[str] = []
    for c in chars.upper():
        if c.isdigit():
            words.append(zero if c == "0" else DIGIT_WORDS[int(c)])
        elif c in nato:
            words.append(NATO[c])
        elif c.isalpha():
            words.append(c)
        else:
            raise ValueError(f"cannot spell {c!r}")
    return " ".join(words)


def spell_groups(
    value: str, sizes: tuple[int, ...], *, nato: str = "", zero: str = "zero"
) -> list[str]:
    """``value`` spelled in consecutive groups of ``sizes`` characters (one chunk each)."""
    if sum(sizes) != len(value):
        raise ValueError(f"groups {sizes} do not cover {len(value)} characters")
    out: list[str] = []
    at = 0
    for size in sizes:
        out.append(spell(value[at : at + size], nato=nato, zero=zero))
        at += size
    return out


@dataclass(frozen=True)
class Chunk:
    """One stretch of speech with no designed pause inside."""

    text: str
    # Kokoro phonemes to speak instead of the text, where the spelling misleads the
    # phonemizer ("mm-hmm" would come out as "em em hum").
    phonemes: str | None = None


@dataclass(frozen=True)
class CaseSpec:
    id: str
    kind: Kind
    expects: Expects | None
    chunks: tuple[Chunk, ...]
    # The entity said, in compact form (phone digits, VIN, plate, email, mileage), if any.
    value: str | None = None
    # A voice (and speed) that must say this case instead of the drawn ones: chosen by
    # ``python -m dealerline_sim.devset check`` where Kokoro misread the drawn voice.
    voice: str | None = None
    speed: float | None = None

    @property
    def text(self) -> str:
        return PAUSE_MARK.join(c.text for c in self.chunks)


def case(
    id: str,
    kind: Kind,
    expects: Expects | None,
    said: str | list[str],
    *,
    value: str | None = None,
    voice: str | None = None,
    speed: float | None = None,
    phonemes: str | None = None,
) -> CaseSpec:
    """A case from its spoken text: ``said`` is one string with ``|`` at each pause, or the
    list of chunks. ``phonemes`` (single-chunk cases only) replaces the text for Kokoro."""
    parts = [p.strip() for p in (said.split("|") if isinstance(said, str) else said)]
    if not parts or any(not p for p in parts):
        raise ValueError(f"{id}: empty chunk in {said!r}")
    if phonemes is not None and len(parts) != 1:
        raise ValueError(f"{id}: phonemes are for single-chunk cases")
    if kind == "pause" and len(parts) < 2:
        raise ValueError(f"{id}: a pause case needs at least two chunks")
    if kind != "pause" and len(parts) != 1:
        raise ValueError(f"{id}: only pause cases have pauses")
    chunks = tuple(Chunk(p, phonemes) for p in parts)
    return CaseSpec(
        id=id, kind=kind, expects=expects, chunks=chunks, value=value, voice=voice, speed=speed
    )
