"""The gateway's Prometheus metrics, registered on the service's common Metrics."""

from __future__ import annotations

from dealerline_common.metrics import Metrics

ENDPOINT_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.5, 2.0, 5.0)


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
