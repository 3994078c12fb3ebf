"""Prometheus metrics: one registry per service and the buckets turn latencies use.

Names follow one scheme across the fleet (all under the ``dealerline_`` namespace):
``<service>_<thing>_<unit>`` with seconds for every duration, ``_total`` for counters,
``*_jobs_in_flight`` / ``*_worker_capacity`` gauges for the speech workers (the autoscaler
divides one by the other), ``*_queue_wait_seconds`` from a job's publish to its start,
``*_real_time_factor`` (processing time / audio time), ``turn_stage_seconds{stage}`` for
the per-stage latency of a turn. The metrics here are the ones every service has: bus
health (reconnects, redeliveries, lost job leases, publish retries and drops) and the
state of a drain. ``deploy/grafana/dealerline.json`` charts them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Seconds; voice turns live between ~50 ms (endpointing) and a few seconds (LLM).
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """A registry plus factory methods, so a service's metrics never clash with another's."""

    def __init__(self, namespace: str = "dealerline") -> None:
        self.namespace = namespace
        self.registry = CollectorRegistry(auto_describe=True)
        self.bus_reconnects = self.counter("bus_reconnects_total", "Reconnections to NATS")
        self.bus_disconnects = self.counter("bus_disconnects_total", "Disconnections from NATS")
        self.jobs_redelivered = self.counter(
            "bus_redelivered_total", "Work messages received more than once", ["subject_kind"]
        )
        self.jobs_handed_back = self.counter(
            "bus_handed_back_total",
            "Work messages given back to the group by a draining process, by reason "
            "(draining: pulled as the drain began; deadline: unfinished at its deadline)",
            ["subject_kind", "reason"],
        )
        self.jobs_lease_lost = self.counter(
            "bus_lease_lost_total",
            "Work jobs cancelled because their in-progress heartbeats went unanswered for "
            "3/4 of ack_wait (disconnected or stalled): left to another replica",
            ["subject_kind"],
        )
        self.bus_publish_retries = self.counter(
            "bus_publish_retries_total",
            "JetStream publishes tried again (NATS or JetStream down or coming back)",
            ["subject_kind"],
        )
        self.bus_publish_dropped = self.counter(
            "bus_publish_dropped_total",
            "Core NATS messages dropped: disconnected and the reconnect buffer was full",
            ["subject_kind"],
        )
        self.draining = self.gauge(
            "service_draining", "1 from SIGTERM until the process exits: no new work taken"
        )

    def counter(self, name: str, doc: str, labels: list[str] | None = None) -> Counter:
        return Counter(name, doc, labels or [], namespace=self.namespace, registry=self.registry)

    def gauge(self, name: str, doc: str, labels: list[str] | None = None) -> Gauge:
        return Gauge(name, doc, labels or [], namespace=self.namespace, registry=self.registry)

    def histogram(
        self,
        name: str,
        doc: str,
        labels: list[str] | None = None,
        buckets: tuple[float, ...] = LATENCY_BUCKETS,
    ) -> Histogram:
        return Histogram(
            name,
            doc,
            labels or [],
            namespace=self.namespace,
            registry=self.registry,
            buckets=buckets,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
