"""What a Twilio signature was computed over, by one rule for every service that checks one
(the gateway's webhooks and media-stream handshake, the escalation service's webhooks).

The URL: Twilio signs the URL it requested, which behind a reverse proxy is the *public*
one, not the one the app sees. :func:`signed_urls` lists the URLs a request may have been
signed over:

- the configured public base URL (scheme, host and path prefix, e.g.
  ``https://example.com/dealer1``) + the request's path + its query;
- when forwarded headers are trusted, ``X-Forwarded-Proto`` :// ``X-Forwarded-Host`` +
  ``X-Forwarded-Prefix`` (else the configured prefix) + path + query.

The path prefix is added once: a proxy that strips ``/dealer1`` hands the app
``/api/voice/incoming``; one that does not (or an app served with a ``root_path``) hands it
``/dealer1/api/voice/incoming``, which already carries it. For the media stream
(``websocket=True``) the scheme becomes ``wss`` (``ws`` for a plain-http base).

The key and the hash: the account's auth token with HMAC-SHA1 (Twilio's default), or,
where a Webhooks Rule matches the URL, the rule's SharedKey with HMAC-SHA256, announced by
``X-Twilio-Webhooks-Signature-Settings: key=<id>,algorithm=HMAC_SHA256`` (the signed
string is the same). :func:`signing_scheme` picks the one a request must be checked with,
or none when the configuration does not accept what the request claims: the header never
chooses a weaker check than the one configured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

SignatureAlgorithms = Literal["sha1", "sha256", "both"]

# twilio.request_validator's names of the hashes
HMAC_SHA1 = "HMAC_SHA1"
HMAC_SHA256 = "HMAC_SHA256"
SIGNATURE_HEADER = "x-twilio-signature"
SIGNATURE_SETTINGS_HEADER = "x-twilio-webhooks-signature-settings"

_MAX_HEADER = 512


def _first(value: str | None) -> str:
    """The first (client-most) value of a comma-separated forwarded header."""
    return (value or "").split(",")[0].strip()


def _prefix(value: str) -> str | None:
    """A usable path prefix (``/dealer1``; ``""`` for none), or None if malformed."""
    prefix = value.rstrip("/")
    if prefix and (not prefix.startswith("/") or any(c in prefix for c in "?# \t")):
        return None
    return prefix


def _ws_scheme(scheme: str) -> str:
    return "wss" if scheme in ("https", "wss") else "ws"


def _urls_on(scheme: str, netloc: str, prefix: str, path: str, query: str) -> list[str]:
    """The URL with the prefix added, and, when the path already starts with the prefix,
    the URL as the app saw it (both are this deployment's; which one Twilio used
    depends on whether the proxy strips the prefix)."""
    paths = [prefix + path]
    if prefix and (path == prefix or path.startswith(prefix + "/")):
        paths.append(path)
    return [f"{scheme}://{netloc}{p}{query}" for p in paths]


def signed_urls(
    public_url: str | None,
    path: str,
    query: str,
    headers: Mapping[str, str],
    *,
    trust_forwarded: bool,
    websocket: bool = False,
) -> list[str]:
    """Every URL a request to ``path`` (as the app saw it) with ``query`` (without the
    ``?``) may have been signed over, without duplicates; empty when no public URL is
    known. ``headers`` are the request's (lower-case names, as Starlette gives them)."""
    q = f"?{query}" if query else ""
    urls: list[str] = []
    configured_prefix = ""
    if public_url:
        base = urlsplit(public_url)
        configured_prefix = _prefix(base.path) or ""
        scheme = _ws_scheme(base.scheme) if websocket else base.scheme
        urls += _urls_on(scheme, base.netloc, configured_prefix, path, q)
    if trust_forwarded:
        proto, host = (
            _first(headers.get("x-forwarded-proto")),
            _first(headers.get("x-forwarded-host")),
        )
        forwarded_prefix = headers.get("x-forwarded-prefix")
        prefix = (
            configured_prefix if forwarded_prefix is None else _prefix(_first(forwarded_prefix))
        )
        if proto and host and prefix is not None and "/" not in host:
            scheme = _ws_scheme(proto) if websocket else proto
            urls += _urls_on(scheme, host, prefix, path, q)
    return list(dict.fromkeys(urls))


@dataclass(frozen=True)
class SigningKeys:
    """The secrets a service checks Twilio's signatures with, and which hashes it accepts."""

    algorithms: SignatureAlgorithms
    auth_token: str | None  # HMAC-SHA1
    shared_key: str | None = None  # the Webhooks Rule's SharedKey secret (HMAC-SHA256)
    shared_key_id: str | None = None  # when set, the header must name this key


@dataclass(frozen=True)
class SigningScheme:
    """How one request's signature is checked: ``twilio.request_validator`` algorithm
    name and the secret."""

    algorithm: str
    secret: str


def parse_signature_settings(header: str | None) -> dict[str, str]:
    """``key=...,algorithm=...`` as a dict (names lower-case; malformed parts skipped)."""
    out: dict[str, str] = {}
    for part in (header or "")[:_MAX_HEADER].split(","):
        name, sep, value = part.partition("=")
        if sep and name.strip() and value.strip():
            out[name.strip().lower()] = value.strip()
    return out


def signing_scheme(keys: SigningKeys, settings_header: str | None) -> SigningScheme | None:
    """The scheme a request carrying ``X-Twilio-Webhooks-Signature-Settings:
    settings_header`` (None: absent) is checked with, or None when it cannot be accepted
    (a hash not configured, an unknown key id, or no secret for it)."""
    settings = parse_signature_settings(settings_header)
    claimed = settings.get("algorithm", HMAC_SHA1).upper() if settings_header else HMAC_SHA1
    if claimed == HMAC_SHA256:
        if keys.algorithms == "sha1" or not keys.shared_key:
            return None
        if keys.shared_key_id is not None and settings.get("key") != keys.shared_key_id:
            return None
        return SigningScheme(HMAC_SHA256, keys.shared_key)
    if claimed == HMAC_SHA1 and keys.algorithms != "sha256" and keys.auth_token:
        return SigningScheme(HMAC_SHA1, keys.auth_token)
    return None
