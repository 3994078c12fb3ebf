"""The gateway's Prometheus metrics, registered on the service's common Metrics."""

from __future__ import annotations

from dealerline_common.metrics import Metrics

ENDPOINT_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.5, 2.0, 5.0)
PROBE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0)
MODEL_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0)
HOLD_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0)


class GatewayMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.registry = metrics
        self.calls = metrics.counter("gateway_calls_total", "Incoming calls answered")
        self.active_streams = metrics.gauge("gateway_active_streams", "Media streams open")
        self.streams_rejected = metrics.counter(
            "gateway_streams_rejected_total", "Media streams refused", ["reason"]
        )
        self.signature_failures = metrics.counter(
            "gateway_signature_failures_total", "Requests with a bad X-Twilio-Signature", ["route"]
        )
        self.bad_frames = metrics.counter(
            "gateway_bad_frames_total", "Media-stream frames skipped as malformed", ["reason"]
        )
        self.task_failures = metrics.counter(
            "gateway_task_failures_total",
            "Per-call tasks that died with an error (the stream is then closed)",
            ["task"],
        )
        self.event_publish_failures = metrics.counter(
            "gateway_event_publish_failures_total",
            "Best-effort webhook events not published in time",
            ["event"],
        )
        self.utterances = metrics.counter("gateway_utterances_total", "Utterances endpointed")
        self.utterances_dropped = metrics.counter(
            "gateway_utterances_dropped_total",
            "Caller utterances not queued for the bus (backlog: the call already had "
            "utterance_backlog_s of audio waiting)",
            ["reason"],
        )
        self.blips = metrics.counter("gateway_vad_blips_total", "Onsets too short to be speech")
        self.barge_ins = metrics.counter("gateway_barge_ins_total", "Caller spoke over playback")
        self.playback_drops = metrics.counter(
            "gateway_playback_dropped_total", "Sentences of audio not played", ["reason"]
        )
        self.stage_latency = metrics.histogram(
            "turn_stage_seconds", "Per-stage turn latency seen by the gateway", ["stage"]
        )
        self.endpoint_delay = metrics.histogram(
            "gateway_endpoint_delay_seconds",
            "Last voiced frame to end of utterance declared",
            buckets=ENDPOINT_BUCKETS,
        )
        self._turn_taking(metrics)
        self._barge(metrics)

    def _turn_taking(self, metrics: Metrics) -> None:
        self.end_of_turn = metrics.counter(
            "gateway_end_of_turn_total",
            "Caller turns ended, by the reason the end was declared then",
            ["reason"],
        )
        self.stt_probes = metrics.counter(
            "gateway_stt_probes_total",
            "stt.probe requests by purpose (pause: speculative transcript; barge: judging "
            "speech over playback) and outcome (ok, error, timeout, no_responders)",
            ["purpose", "outcome"],
        )
        self.stt_probe_latency = metrics.histogram(
            "gateway_stt_probe_seconds",
            "stt.probe request to its answer",
            ["purpose"],
            buckets=PROBE_BUCKETS,
        )
        self.speculations = metrics.counter(
            "gateway_speculations_total",
            "Speculative transcripts: used (published with the utterance) or dropped "
            "(spoke_on: the caller went on; unanswered: no answer when the turn ended; "
            "failed: the probe erred)",
            ["outcome"],
        )
        self.turn_model_latency = metrics.histogram(
            "gateway_turn_model_seconds", "Turn model predict time", buckets=MODEL_BUCKETS
        )
        self.turn_model_runs = metrics.counter(
            "gateway_turn_model_runs_total",
            "Turn model runs by outcome (ok, error, superseded: a newer pause came first)",
            ["outcome"],
        )

    def _barge(self, metrics: Metrics) -> None:
        self.holds = metrics.counter(
            "gateway_playback_holds_total",
            "Playback held because the caller spoke over it, by how the hold ended "
            "(resumed: backchannel, no_speech, blip; barged in: words, max_hold, "
            "kept_talking, probe_failed)",
            ["outcome"],
        )
        self.hold_duration = metrics.histogram(
            "gateway_hold_seconds",
            "How long playback was held before it resumed or was barged in on",
            buckets=HOLD_BUCKETS,
        )
        self.backchannels = metrics.counter(
            "gateway_backchannels_total",
            "Caller speech over playback judged a backchannel: playback resumed, not a turn",
        )
