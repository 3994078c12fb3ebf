"""Each turn as the gateway times it: the caller's utterance going out to STT (its
metadata, its timings, its ``gateway.turn`` span with the ``gateway.endpointing`` child),
and the reply's first media frame, which closes the turn span and yields the turn's
:class:`~dealerline_common.messages.LatencyEvent` with the per-stage latencies.

The last few utterances' timings and open spans are remembered, so a reply can be
matched to the utterance it answers; the oldest are forgotten (their spans end as
``no_reply``).
"""

from __future__ import annotations

from dealerline_common import subjects, tracing
from dealerline_common.logs import get_logger
from dealerline_common.messages import LatencyEvent, TurnTimings, UtteranceMeta, new_id

from .call import StreamCall
from .caller_audio import Heard
from .outbox import Publish
from .playback import Sentence, Turn
from .telemetry import GatewayMetrics
from .vad import Utterance

log = get_logger(__name__)

_REMEMBERED_UTTERANCES = 16


class TurnLatency:
    def __init__(self, call: StreamCall, gm: GatewayMetrics) -> None:
        self._call = call
        self._gm = gm
        self._index = 0
        self._timings: dict[str, TurnTimings] = {}  # by utterance id
        self._spans: dict[str, tracing.Span] = {}  # by utterance id, until first media

    def utterance(self, heard: Heard) -> Publish:
        """The endpointed utterance as the message for STT (durable, deduplicated by id),
        with why its turn ended there and, when one still holds, its speculative
        transcript (STT then publishes that instead of decoding again)."""
        call, utt = self._call, heard.utterance
        utterance_id = new_id("utt")
        timings = TurnTimings(
            speech_started=utt.speech_started_at,
            speech_end=utt.speech_end_at,
            speculation_started=heard.speculation_started,
        )
        meta = UtteranceMeta(
            session_id=call.session_id,
            utterance_id=utterance_id,
            call_sid=call.call_sid,
            index=self._index,
            duration_ms=utt.duration_ms,
            during_playback=heard.during_playback,
            timings=timings,
            transcript=heard.transcript,
            end_of_turn=heard.end_of_turn,
        )
        self._index += 1
        self._timings[utterance_id] = timings
        while len(self._timings) > _REMEMBERED_UTTERANCES:
            self._timings.pop(next(iter(self._timings)))
        self._gm.utterances.inc()
        self._gm.endpoint_delay.observe(max(0.0, utt.ended_at - utt.speech_end_at))
        turn_ctx = self._start_turn_span(utterance_id, utt, meta) if tracing.enabled() else None
        log.info(
            "utterance endpointed",
            session_id=call.session_id,
            utterance_id=utterance_id,
            duration_ms=round(utt.duration_ms),
            reason=utt.reason,
            expects=heard.end_of_turn.expects if heard.end_of_turn else None,
            speculative=heard.transcript is not None,
        )
        return Publish(
            subjects.utterance(call.session_id),
            utt.audio,
            None,
            utterance_id,
            meta=meta,
            trace_ctx=turn_ctx,
        )

    def _start_turn_span(
        self, utterance_id: str, utt: Utterance, meta: UtteranceMeta
    ) -> tracing.Context | None:
        """The turn's span, open until the reply's first media frame; its endpointing
        child is complete already (both are timed by the frames' arrival)."""
        turn = tracing.start_span(
            "gateway.turn",
            context=self._call.ctx,
            start_time=utt.speech_started_at,
            session_id=self._call.session_id,
            utterance_id=utterance_id,
            index=meta.index,
            during_playback=meta.during_playback,
            audio_ms=round(utt.duration_ms, 1),
        )
        turn_ctx = tracing.context_with(turn)
        eot = meta.end_of_turn
        endpointing = tracing.start_span(
            "gateway.endpointing",
            context=turn_ctx,
            start_time=utt.speech_end_at,
            reason=utt.reason,
            hangover_ms=round(max(0.0, utt.ended_at - utt.speech_end_at) * 1000.0, 1),
            end_of_turn=eot.reason if eot is not None else None,
            expects=eot.expects if eot is not None else None,
            model_prob=eot.model_prob if eot is not None else None,
            speculative=meta.transcript is not None,
        )
        tracing.end_span(endpointing, end_time=utt.ended_at)
        self._spans[utterance_id] = turn
        while len(self._spans) > _REMEMBERED_UTTERANCES:
            oldest = next(iter(self._spans))
            tracing.end_span(self._spans.pop(oldest), outcome="no_reply")
        return turn_ctx

    def first_media(self, sentence: Sentence, turn: Turn) -> LatencyEvent:
        """The reply's first frame went out: the turn's latencies (logged, observed, and
        returned as the event for the dashboards)."""
        timings = (turn.timings or sentence.meta.timings).model_copy()
        utterance_id = turn.utterance_id or sentence.meta.utterance_id
        ours = self._timings.get(utterance_id) if utterance_id else None
        if ours is not None:
            for name in ("speech_started", "speech_end", "utterance_published"):
                if getattr(timings, name) is None:
                    setattr(timings, name, getattr(ours, name))
        timings.first_media = turn.first_media_at
        stages = timings.stages_ms()
        for stage, ms in stages.items():
            self._gm.stage_latency.labels(stage).observe(ms / 1000.0)
        turn_span = self._spans.pop(utterance_id, None) if utterance_id else None
        if turn_span is not None:
            tracing.end_span(
                turn_span,
                end_time=turn.first_media_at,
                turn_id=sentence.turn_id,
                outcome="answered",
                **{f"latency_ms.{stage}": ms for stage, ms in stages.items()},
            )
        session_id = self._call.session_id
        log.info("first media of turn", session_id=session_id, turn_id=sentence.turn_id, **stages)
        return LatencyEvent(
            session_id=session_id,
            turn_id=sentence.turn_id,
            utterance_id=utterance_id,
            timings=timings,
            stages_ms=stages,
        )

    def end(self) -> None:
        """The call ended: the turns never answered end their spans (idempotent)."""
        for span in self._spans.values():
            tracing.end_span(span, outcome="call_ended")
        self._spans.clear()
