"""OpenTelemetry tracing for the fleet: one trace per call, across every NATS hop.

The gateway opens the call's root span when a media stream starts; every utterance,
transcript, sentence and audio message carries the W3C ``traceparent`` of the span that
published it in its NATS headers (:mod:`.bus` injects and extracts them), so the spans
of the gateway, STT, the agent and TTS join one trace per call.

Off by default, with no overhead: unless the standard ``OTEL_*`` variables name an
exporter (``OTEL_TRACES_EXPORTER=otlp|console``, or an ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) and ``OTEL_SDK_DISABLED`` is not true, the SDK is
never imported: no provider, no exporter thread, :func:`span` returns a shared no-op
and the bus neither injects nor extracts headers. (The OpenTelemetry spec defaults
``OTEL_TRACES_EXPORTER`` to ``otlp``; here an unconfigured pod must not try to reach a
collector that does not exist, so nothing is exported unless asked for.)

When on, the OTLP/HTTP exporter, batching, sampling and resource attributes read their
own standard variables (``OTEL_EXPORTER_OTLP_*``, ``OTEL_BSP_*``, ``OTEL_TRACES_SAMPLER``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_SERVICE_NAME``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode, Tracer

from .logs import get_logger, mask_text

log = get_logger(__name__)

__all__ = [
    "INVALID_SPAN",
    "Context",
    "Span",
    "SpanKind",
    "TracingConfigError",
    "annotate",
    "attached",
    "configure_tracing",
    "context_with",
    "current_context",
    "enabled",
    "end_span",
    "extract",
    "inject",
    "ns",
    "record_error",
    "reset_tracing",
    "setup_tracing",
    "shutdown_tracing",
    "span",
    "start_span",
    "trace_id",
]

SCOPE = "dealerline"
_TRUE = frozenset({"true", "1", "yes", "on"})


class TracingConfigError(ValueError):
    """The ``OTEL_*`` variables ask for something this build cannot do."""


class _State:
    enabled = False
    configured = False
    tracer: Tracer = trace.NoOpTracer()
    provider: trace.TracerProvider | None = None


_state = _State()


# ------------------------------------------------------------------ configuration


def exporters_from_env(env: Mapping[str, str] | None = None) -> list[str]:
    """The trace exporters the environment asks for (``[]`` = tracing off).

    Raises :class:`TracingConfigError` naming the variable for an exporter or protocol
    this build does not ship (only OTLP over HTTP/protobuf and the console).
    """
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return []
    raw = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if raw:
        names = [n.strip() for n in raw.split(",") if n.strip()]
    elif env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        names = ["otlp"]
    else:
        names = []
    names = [n for n in names if n != "none"]
    for name in names:
        if name not in ("otlp", "console"):
            raise TracingConfigError(
                f"OTEL_TRACES_EXPORTER: {name!r} is not supported (use otlp, console or none)"
            )
    if "otlp" in names:
        for var in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            protocol = env.get(var, "").strip().lower()
            if protocol:
                if protocol != "http/protobuf":
                    raise TracingConfigError(
                        f"{var}: {protocol!r} is not supported (this build exports OTLP "
                        "over http/protobuf only)"
                    )
                break
    return names


def setup_tracing(service_name: str) -> bool:
    """Configure this process's tracing from the ``OTEL_*`` variables; True when on.

    Only the first call in a process does anything (the service's ``main`` calls it, and
    :meth:`.bus.Bus.connect` calls it too, so no service can forget); later calls return
    the state the first one chose. ``OTEL_SERVICE_NAME`` (or ``service.name`` in
    ``OTEL_RESOURCE_ATTRIBUTES``) overrides ``service_name``.
    """
    if _state.configured:
        return _state.enabled
    names = exporters_from_env()
    if not names:
        _state.configured = True
        return False

    # The SDK is imported only here, so a process with tracing off never loads it.
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    detected = Resource.create({"service.namespace": "dealerline"})
    name = str(detected.attributes.get(SERVICE_NAME, ""))
    if not name or name.startswith("unknown_service"):
        name = service_name
    provider = TracerProvider(resource=detected.merge(Resource({SERVICE_NAME: name})))
    for exporter_name in names:
        exporter: SpanExporter
        if exporter_name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        else:
            exporter = ConsoleSpanExporter(service_name=name)
        provider.add_span_processor(BatchSpanProcessor(exporter))
    # Deliberately not the global provider: libraries instrumented with the OTel API
    # (FastAPI opens a span per request, health probes and scrapes included, and one that
    # lasts a whole media stream) would fill the backend with traces nobody reads and
    # make their span, not the call's, the active one in the gateway's stream handler.
    configure_tracing(provider)
    log.info("tracing on", service=name, exporters=",".join(names))
    return True


def configure_tracing(provider: trace.TracerProvider | None) -> None:
    """Trace with ``provider`` from now on (None: off). Tests pass an SDK provider with
    an in-memory exporter; unlike :func:`setup_tracing` this replaces what was set."""
    _state.configured = True
    _state.provider = provider
    _state.enabled = provider is not None
    _state.tracer = provider.get_tracer(SCOPE) if provider is not None else trace.NoOpTracer()


def shutdown_tracing(timeout_s: float = 5.0) -> None:
    """Export what is still buffered and stop the exporter (the end of a drain); a no-op
    when tracing is off. Spans started afterwards are dropped."""
    provider = _state.provider
    if provider is None:
        return
    force_flush = getattr(provider, "force_flush", None)
    shutdown = getattr(provider, "shutdown", None)
    with contextlib.suppress(Exception):
        if callable(force_flush):
            force_flush(int(timeout_s * 1000))
        if callable(shutdown):
            shutdown()


def reset_tracing() -> None:
    """Shut down what is configured and forget it, so :func:`setup_tracing` reads the
    environment again (tests)."""
    shutdown_tracing()
    configure_tracing(None)
    _state.configured = False


def enabled() -> bool:
    """Whether spans are recorded and trace context travels in NATS headers."""
    return _state.enabled


# ------------------------------------------------------------------ propagation


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Write the current trace context (``traceparent``, ``tracestate``) into ``headers``.

    Overwrites trace headers copied from an incoming message, so the next hop becomes a
    child of the current span; a no-op when tracing is off or no span is current."""
    if _state.enabled:
        propagate.inject(headers)
    return headers


def extract(headers: Mapping[str, str] | None) -> Context | None:
    """The trace context carried by a message's headers, on an empty base context (a
    handler must not inherit whatever its subscription task was created under); None
    when tracing is off or the message carries none."""
    if not _state.enabled or not headers or "traceparent" not in headers:
        return None
    return propagate.extract(headers, context=Context())


def current_context() -> Context | None:
    """The active context when tracing is on (to carry into later work), else None."""
    return otel_context.get_current() if _state.enabled else None


def context_with(span: Span) -> Context | None:
    """A context whose active span is ``span`` (None when tracing is off)."""
    if not _state.enabled:
        return None
    return trace.set_span_in_context(span, Context())


@contextlib.contextmanager
def attached(ctx: Context | None) -> Iterator[None]:
    """Make ``ctx`` the active context inside the block (nothing when None)."""
    if ctx is None:
        yield
        return
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


def trace_id(ctx: Context | None = None) -> str | None:
    """The 32-hex-digit trace id active in ``ctx`` (default: now), for logs; None if none."""
    if not _state.enabled:
        return None
    span_context = trace.get_current_span(ctx).get_span_context()
    if not span_context.is_valid:
        return None
    return format(span_context.trace_id, "032x")


# ------------------------------------------------------------------ spans


def ns(seconds: float) -> int:
    """Wall-clock seconds (``time.time()``) as the nanoseconds span times are given in."""
    return int(seconds * 1_000_000_000)


def _attributes(attrs: Mapping[str, Any]) -> dict[str, str | bool | int | float]:
    out: dict[str, str | bool | int | float] = {}
    for key, value in attrs.items():
        if value is None:
            continue
        out[key] = value if isinstance(value, str | bool | int | float) else str(value)
    return out


def start_span(
    name: str,
    *,
    context: Context | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    start_time: float | None = None,
    attributes: Mapping[str, Any] | None = None,
    **attrs: Any,
) -> Span:
    """Start a span that the caller ends with :func:`end_span` (a call, a turn: spans
    that outlive one block). ``context`` is the parent (default: the active context);
    ``start_time`` is wall-clock seconds; ``attributes`` for dotted names, ``attrs`` for
    the rest. Returns the invalid span when tracing is off."""
    if not _state.enabled:
        return INVALID_SPAN
    return _state.tracer.start_span(
        name,
        context=context,
        kind=kind,
        attributes=_attributes({**(attributes or {}), **attrs}),
        start_time=ns(start_time) if start_time is not None else None,
    )


def end_span(span: Span, end_time: float | None = None, **attrs: Any) -> None:
    """Set ``attrs`` on ``span`` and end it (at ``end_time``, wall-clock seconds)."""
    if not span.is_recording():
        return
    if attrs:
        span.set_attributes(_attributes(attrs))
    span.end(end_time=ns(end_time) if end_time is not None else None)


def annotate(**attrs: Any) -> None:
    """Set attributes on the active span (``None`` values left out); no-op when off."""
    if not _state.enabled:
        return
    current = trace.get_current_span()
    if current.is_recording():
        current.set_attributes(_attributes(attrs))


def record_error(span: Span, exc: BaseException) -> None:
    """Mark ``span`` failed by ``exc`` (the message is masked: it may quote a caller)."""
    if not span.is_recording():
        return
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, mask_text(f"{type(exc).__name__}: {exc}")[:300]))


class _NoSpan(contextlib.AbstractContextManager[Span]):
    """What :func:`span` returns while tracing is off: nothing is created or attached."""

    def __enter__(self) -> Span:
        return INVALID_SPAN

    def __exit__(self, *exc: object) -> None:
        return None


_NO_SPAN = _NoSpan()


@contextlib.contextmanager
def _active_span(
    name: str,
    context: Context | None,
    kind: SpanKind,
    start_time: float | None,
    attrs: Mapping[str, Any],
) -> Iterator[Span]:
    sp = start_span(name, context=context, kind=kind, start_time=start_time, attributes=attrs)
    token = otel_context.attach(trace.set_span_in_context(sp, context))
    try:
        yield sp
    except Exception as exc:
        record_error(sp, exc)
        raise
    except BaseException as exc:
        # A cancelled turn (barge-in, hang-up, drain deadline) is not a failure.
        if sp.is_recording():
            sp.set_attribute("dealerline.cancelled", True)
            sp.set_attribute("dealerline.exit", type(exc).__name__)
        raise
    finally:
        otel_context.detach(token)
        sp.end()


def span(
    name: str,
    *,
    context: Context | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    start_time: float | None = None,
    attributes: Mapping[str, Any] | None = None,
    **attrs: Any,
) -> contextlib.AbstractContextManager[Span]:
    """``with span("stt.transcribe", session_id=sid) as s:`` — a span active in the block.

    Its parent is ``context`` when given, else the active span (for a bus handler: the
    publisher's span, from the message headers). Bus publishes inside the block carry it
    to the next hop. An exception marks it failed; a cancellation only marks it
    cancelled. ``None`` attribute values are left out (``attributes`` takes dotted names).
    Costs nothing when tracing is off.
    """
    if not _state.enabled:
        return _NO_SPAN
    return _active_span(name, context, kind, start_time, {**(attributes or {}), **attrs})
