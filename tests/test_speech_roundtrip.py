"""The agent's voice is intelligible: a sentence spoken by the TTS worker, sent through the
phone path as the gateway would, comes back from the STT worker as the same words.

It crosses two services, so it lives with the cross-service tests.
"""

from __future__ import annotations

import re

import jiwer
import pytest

from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.local_nats import NatsServer
from dealerline_common.messages import (
    AudioMeta,
    Say,
    Transcript,
    TurnTimings,
    UtteranceMeta,
    from_header,
    loads,
    now,
)
from dealerline_stt.service import SttService
from dealerline_stt.settings import SttSettings
from dealerline_tts.service import TtsService
from dealerline_tts.settings import TtsSettings

WAIT_S = 120

SENTENCES = [
    "A standard oil change is $49.95 and takes about 45 minutes.",
    "I can book your tire rotation for Tuesday at 9:30 AM.",
]


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


@pytest.mark.parametrize("sentence", SENTENCES)
async def test_tts_audio_transcribes_back_to_the_sentence(
    sentence: str, nats_server: NatsServer, client: Bus
) -> None:
    common = {"nats_url": nats_server.url, "http_port": 0, "http_host": "127.0.0.1"}
    tts = TtsService(TtsSettings(**common, js_file_storage=False, device="cpu"))
    stt = SttService(SttSettings(**common, js_file_storage=False))
    await tts.start()  # the real Kokoro model
    await stt.start()  # the real Whisper model, loaded and warmed by the service
    try:
        audio_sub = await client.nc.subscribe(subjects.audio("rt-1"))
        text_sub = await client.nc.subscribe(subjects.transcript("rt-1"))
        await client.publish_durable(
            subjects.say("rt-1"),
            Say(session_id="rt-1", turn_id="turn_1", seq=0, text=sentence, last=True),
        )
        msg = await audio_sub.next_msg(timeout=WAIT_S)
        meta = from_header(AudioMeta, dict(msg.headers or {}))
        audio = bytes(msg.data)
        assert meta.duration_ms == pytest.approx(len(audio) / 8.0, abs=0.2)

        utterance = UtteranceMeta(
            session_id="rt-1",
            utterance_id="utt_rt",
            index=0,
            duration_ms=meta.duration_ms,
            timings=TurnTimings(utterance_published=now()),
        )
        await client.publish_durable(
            subjects.utterance("rt-1"), audio, headers=utterance.header(), msg_id="utt_rt"
        )
        transcript = loads(Transcript, (await text_sub.next_msg(timeout=WAIT_S)).data)
        # Whisper writes what Kokoro was told to say in its own spelling ("$49.95").
        reference = normalise(sentence.replace("$49.95", "49 dollars and 95 cents"))
        heard = normalise(
            transcript.text.replace("$49.95", "49 dollars and 95 cents").replace("9.30", "9 30")
        )
        assert jiwer.wer(reference, heard) < 0.2, transcript.text
    finally:
        await stt.drain()
        await tts.drain()
