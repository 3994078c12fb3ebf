"""Parsing the TwiML that answers an incoming-call webhook, the way Twilio reads it.

Only what the phone simulator acts on is modelled: ``<Response><Connect><Stream url>``
with ``<Parameter name value/>`` children. The rules of ``/work/shared/TWILIO.md`` are
enforced: the stream URL must be ``wss://`` on port 443 with no query string.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import urlsplit


class SimulatorError(RuntimeError):
    """The server under test did something real Twilio would refuse or fail on."""


class TwimlError(SimulatorError):
    """The webhook answered TwiML that cannot start a bidirectional Media Stream."""

    def __init__(self, message: str, twiml: str) -> None:
        super().__init__(f"{message}\n--- TwiML ---\n{twiml}")
        self.twiml = twiml


@dataclass
class StreamInstruction:
    """What ``<Connect><Stream>`` asked Twilio to do."""

    url: str
    parameters: dict[str, str]
    stream_attributes: dict[str, str] = field(default_factory=dict)
    connect_attributes: dict[str, str] = field(default_factory=dict)
    # tag names of the verbs after <Connect> (run when the server closes the socket)
    verbs_after_connect: list[str] = field(default_factory=list)
    twiml: str = ""


def parse_connect_stream(twiml: str) -> StreamInstruction:
    """Parse an incoming-call answer; raise :class:`TwimlError` unless it is a valid
    ``<Response><Connect><Stream url="wss://…">`` document."""
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError as exc:
        raise TwimlError(
            f"TwiML is not well-formed XML ({exc}) — Twilio error 12100", twiml
        ) from exc
    if root.tag != "Response":
        raise TwimlError(f"TwiML root must be <Response>, got <{root.tag}>", twiml)
    verbs = list(root)
    connect_index = next((i for i, v in enumerate(verbs) if v.tag == "Connect"), None)
    if connect_index is None:
        raise TwimlError(
            "TwiML has no <Connect> verb: no bidirectional Media Stream would be opened",
            twiml,
        )
    connect = verbs[connect_index]
    streams = [c for c in connect if c.tag == "Stream"]
    if len(streams) != 1 or len(list(connect)) != 1:
        raise TwimlError("<Connect> must hold exactly one <Stream> noun", twiml)
    stream = streams[0]
    url = (stream.get("url") or "").strip()
    if not url:
        raise TwimlError("<Stream> has no url attribute", twiml)
    check_stream_url(url, twiml)
    parameters: dict[str, str] = {}
    for child in stream:
        if child.tag != "Parameter":
            raise TwimlError(f"<Stream> may contain only <Parameter>, got <{child.tag}>", twiml)
        name = child.get("name")
        value = child.get("value")
        if not name or value is None:
            raise TwimlError("<Parameter> needs both name and value attributes", twiml)
        parameters[name] = value
    return StreamInstruction(
        url=url,
        parameters=parameters,
        stream_attributes=dict(stream.attrib),
        connect_attributes=dict(connect.attrib),
        verbs_after_connect=[v.tag for v in verbs[connect_index + 1 :]],
        twiml=twiml,
    )


def check_stream_url(url: str, twiml: str = "") -> None:
    """Twilio: the stream URL must be ``wss://`` on 443 and takes no query string."""
    parts = urlsplit(url)
    if parts.scheme != "wss":
        raise TwimlError(f"<Stream url> must use wss:// (got {url!r})", twiml or url)
    if parts.query or "?" in url:
        raise TwimlError(
            f"<Stream url> takes no query string; pass values with <Parameter> (got {url!r})",
            twiml or url,
        )
    if parts.fragment:
        raise TwimlError(f"<Stream url> must not carry a fragment (got {url!r})", twiml or url)
    if not parts.hostname:
        raise TwimlError(f"<Stream url> has no host (got {url!r})", twiml or url)
    try:
        port = parts.port
    except ValueError as exc:
        raise TwimlError(f"<Stream url> has an invalid port ({url!r})", twiml or url) from exc
    if port not in (None, 443):
        raise TwimlError(f"<Stream url> must be on port 443 (got {url!r})", twiml or url)
