"""Everything one gateway process shares between requests: settings, bus, metrics,
health, the one-time stream tokens, the hand-off markers, the signature checker, the
registry of open media streams and the greetings held for streams not open yet
(:mod:`.prefetch`)."""

from __future__ import annotations

from dealerline_common.bus import Bus
from dealerline_common.metrics import Metrics
from dealerline_common.ops import Health

from .admissions import CallAdmissions
from .handoff import Handoffs
from .prefetch import Prefetches
from .settings import GatewaySettings
from .signatures import TwilioSignatures
from .speculate import load_turn_model
from .streams import OpenStream, StreamDeps, Streams
from .telemetry import GatewayMetrics
from .tokens import TokenStore


class Gateway:
    def __init__(
        self, settings: GatewaySettings, bus: Bus, metrics: Metrics, health: Health
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.metrics = metrics
        self.gm = GatewayMetrics(metrics)
        self.health = health
        self.tokens = TokenStore(bus, settings.stream_token_ttl_s)
        self.admissions = CallAdmissions(bus, settings.call_admission_ttl_s)
        self.handoffs = Handoffs(bus, settings.handoff_grace_s)
        self.signatures = TwilioSignatures(settings)
        self.streams = Streams(health)
        self.prefetches = Prefetches(bus, metrics)
        self.stream_deps = StreamDeps(
            settings,
            bus,
            self.gm,
            self.tokens,
            self.handoffs,
            self.streams,
            self.prefetches,
            # Loaded once per process (the end-of-turn decision's turn model); None: the
            # silence rule (configured, or the model file is missing — logged).
            turn_model=load_turn_model(settings),
        )
        health.add_check("bus", lambda: bus.is_connected)
        health.add_check("stream_tokens", lambda: self.tokens.is_ready)

    @property
    def sessions(self) -> dict[int, OpenStream]:
        """The media streams open now."""
        return self.streams.open

    async def start(self) -> None:
        """Open the token bucket and report ready (call once the bus is connected)."""
        await self.tokens.kv()
        await self.admissions.kv()
        await self.handoffs.kv()
        self.health.ready = True

    async def wait_idle(self) -> None:
        """Until no media stream is open."""
        await self.streams.wait_idle()

    async def drain(self, timeout_s: float) -> None:
        """Take no new calls; wait for the streams in progress, then close what is left
        (and drop the greetings held for streams that did not open)."""
        await self.streams.drain(timeout_s)
        await self.prefetches.close()
