"""A phone call through the real fleet: real nats-server, every service as its own
process, the embedded Whisper and Kokoro models, the scripted LLM over HTTP, and the
phone simulator playing Twilio."""

from __future__ import annotations

from pathlib import Path

import pytest

from dealerline_sim.demo import format_report, place_scripted_call, word_error_rate
from dealerline_sim.fleet import Fleet, LlmChoice
from dealerline_sim.phone import PhoneSimulator, Transcriber, new_sid

pytestmark = pytest.mark.e2e

LINES = [
    "Hi, I would like to book an oil change for my car.",
    "Tuesday morning would be great, around nine.",
]


@pytest.fixture
def artifacts() -> Path:
    path = Path("artifacts") / "e2e"
    path.mkdir(parents=True, exist_ok=True)
    return path


async def test_a_call_is_answered_end_to_end(artifacts: Path) -> None:
    scripted = LlmChoice(base_url=None, api_key=None, model="scripted", scripted=True)
    async with Fleet(log_dir=artifacts / "logs", llm=scripted, quiet=True) as fleet:
        report = await place_scripted_call(
            fleet, LINES, pace=2.0, transcriber=Transcriber(), quiet_s=3.0
        )
        (artifacts / "call.txt").write_text(format_report(report))

        greeting, *caller_turns = report.turns
        assert greeting.caller_said is None
        assert greeting.agent_answered, "the LLM greeted the caller on [CALL_STARTED]"
        assert len(caller_turns) == len(LINES)
        for turn in caller_turns:
            assert turn.caller_said is not None
            # the caller's words reach the agent
            assert word_error_rate(turn.caller_said, turn.stt_heard) < 0.2, turn
            assert turn.agent_answered, turn
            assert turn.latency is not None, "the gateway published the turn's stage timings"
            assert turn.latency.stages_ms["total"] > 0
        for turn in report.turns:
            # what the caller heard transcribes back to what the agent said
            assert word_error_rate(turn.agent_answered, turn.caller_heard) < 0.2, turn

        call = report.call
        assert call.protocol_errors == []
        assert call.outbound_media_sizes, "the gateway played audio"
        assert all(size > 0 and size % 160 == 0 for size in call.outbound_media_sizes)
        assert all(size <= 400 for size in call.outbound_media_sizes)
        marked = [s for s in call.heard_segments if s.mark_name]
        assert marked, "one mark per sentence"
        assert all(s.mark_echoed_at is not None for s in marked), "every mark came back"

        async with PhoneSimulator(fleet.gateway_url, fleet.public_url, fleet.auth_token) as sim:
            params = sim.incoming_call_params(new_sid("CA"), "+14155550123", "+18005550100")
            forged = await sim.post_webhook("/api/voice/incoming", params, forged=True)
            assert forged.status_code == 403
            genuine = await sim.post_webhook("/api/voice/incoming", params)
            assert genuine.status_code == 200
