"""Parsing TwiML the way Twilio reads it.

Two entry points:

- :func:`parse_connect_stream` checks the answer to an incoming-call webhook, which in this
  project must be ``<Response><Connect><Stream url>`` with ``<Parameter name value/>``
  children. Twilio's rules (docs/twilio.md) are enforced: the stream URL must be
  ``wss://`` on port 443 with no query string.
- :func:`parse_twiml` reads any voice document into :class:`TwimlVerb` trees for the call
  legs to execute (``dealerline_sim.leg_twiml``, ``leg_dial``: ``<Say>``, ``<Gather>``,
  ``<Dial><Conference>``, ``<Redirect>``, ``<Connect><Stream>``...). Twilio's parse (12100) and schema (12200)
  failures raise :class:`TwimlError`.
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


# -- the general TwiML document (call control verbs) -------------------------------------------

KNOWN_VERBS = frozenset(
    {
        "Say",
        "Play",
        "Pause",
        "Gather",
        "Hangup",
        "Reject",
        "Redirect",
        "Dial",
        "Connect",
        "Enqueue",
        "Leave",
        "Record",
        "Refer",
        "Sms",
        "Start",
        "Stop",
        "Pay",
        "Prompt",
        "Echo",
    }
)
"""Every verb Twilio's voice TwiML defines; the simulator executes a subset (see
``dealerline_sim.legs``) and reports the rest as unsupported rather than guessing."""

_GATHER_CHILDREN = frozenset({"Say", "Play", "Pause"})
_DIAL_NOUNS = frozenset({"Number", "Client", "Conference", "Queue", "Sip", "Sim", "Application"})


@dataclass
class TwimlVerb:
    """One element of a TwiML document: ``tag``, its attributes, its stripped text (the
    words of ``<Say>``, the URL of ``<Redirect>``, the room of ``<Conference>``) and its
    child elements (``<Gather>``'s prompts, ``<Dial>``'s nouns, ``<Stream>``'s
    ``<Parameter>``\\ s)."""

    tag: str
    attrs: dict[str, str] = field(default_factory=dict)
    text: str = ""
    children: list[TwimlVerb] = field(default_factory=list)

    def attr(self, name: str, default: str | None = None) -> str | None:
        return self.attrs.get(name, default)

    def bool_attr(self, name: str, default: bool) -> bool:
        """TwiML booleans are the strings ``true``/``false`` (any case)."""
        value = self.attrs.get(name)
        if value is None or value.strip() == "":
            return default
        return value.strip().lower() == "true"

    def number_attr(self, name: str, default: float) -> float:
        value = self.attrs.get(name)
        if value is None or value.strip() == "":
            return default
        try:
            return float(value)
        except ValueError as exc:
            raise TwimlError(f"<{self.tag} {name}={value!r}> is not a number", "") from exc


def _element(el: ET.Element) -> TwimlVerb:
    return TwimlVerb(
        tag=el.tag,
        attrs={k: v for k, v in el.attrib.items()},
        text=(el.text or "").strip(),
        children=[_element(c) for c in el],
    )


def parse_twiml(twiml: str) -> list[TwimlVerb]:
    """Parse a voice TwiML document into its verbs, as Twilio validates it.

    Raises :class:`TwimlError` (Twilio error 12100, document parse failure) for XML that is
    not well-formed or not rooted at ``<Response>``, and for what Twilio's schema check
    refuses (12200): an unknown verb, ``<Gather>`` holding anything but
    ``<Say>``/``<Play>``/``<Pause>``, a ``<Dial>`` with neither a number nor a noun,
    ``<Conference>`` without a room name.
    """
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError as exc:
        raise TwimlError(
            f"TwiML is not well-formed XML ({exc}) — Twilio error 12100", twiml
        ) from exc
    if root.tag != "Response":
        raise TwimlError(f"TwiML root must be <Response>, got <{root.tag}> — 12100", twiml)
    verbs = [_element(el) for el in root]
    for verb in verbs:
        if verb.tag not in KNOWN_VERBS:
            raise TwimlError(f"<{verb.tag}> is not a TwiML verb — Twilio error 12200", twiml)
        if verb.tag == "Gather":
            for child in verb.children:
                if child.tag not in _GATHER_CHILDREN:
                    raise TwimlError(
                        f"<Gather> may nest only <Say>, <Play>, <Pause>, not <{child.tag}> "
                        "— Twilio error 12200",
                        twiml,
                    )
        if verb.tag == "Dial":
            for child in verb.children:
                if child.tag not in _DIAL_NOUNS:
                    raise TwimlError(f"<{child.tag}> is not a <Dial> noun — 12200", twiml)
            if not verb.children and not verb.text:
                raise TwimlError("<Dial> has neither a number nor a noun — 12200", twiml)
            for child in verb.children:
                if child.tag == "Conference" and not child.text:
                    raise TwimlError("<Conference> needs a room name — 12200", twiml)
    return verbs


def stream_instruction(connect: TwimlVerb, twiml: str = "") -> StreamInstruction:
    """The ``<Connect><Stream>`` of a parsed document as a :class:`StreamInstruction`
    (same checks as :func:`parse_connect_stream`: one ``<Stream>``, ``wss://`` on 443,
    no query string, ``<Parameter name value/>`` children only)."""
    if connect.tag != "Connect":
        raise TwimlError(f"expected <Connect>, got <{connect.tag}>", twiml)
    streams = [c for c in connect.children if c.tag == "Stream"]
    if len(streams) != 1 or len(connect.children) != 1:
        raise TwimlError("<Connect> must hold exactly one <Stream> noun", twiml)
    stream = streams[0]
    url = (stream.attrs.get("url") or "").strip()
    if not url:
        raise TwimlError("<Stream> has no url attribute", twiml)
    check_stream_url(url, twiml)
    parameters: dict[str, str] = {}
    for child in stream.children:
        if child.tag != "Parameter":
            raise TwimlError(f"<Stream> may contain only <Parameter>, got <{child.tag}>", twiml)
        name = child.attrs.get("name")
        value = child.attrs.get("value")
        if not name or value is None:
            raise TwimlError("<Parameter> needs both name and value attributes", twiml)
        parameters[name] = value
    return StreamInstruction(
        url=url,
        parameters=parameters,
        stream_attributes=dict(stream.attrs),
        connect_attributes=dict(connect.attrs),
        twiml=twiml,
    )
