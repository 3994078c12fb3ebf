"""The one rule for what a Twilio signature covers (dealerline_common.twilio_urls), checked
with twilio-python's own RequestValidator: behind a proxy that strips a path prefix, one
that keeps it, forwarded headers, the media-stream handshake, and HMAC-SHA256."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from dealerline_common.twilio_urls import (
    HMAC_SHA1,
    HMAC_SHA256,
    SigningKeys,
    SigningScheme,
    parse_signature_settings,
    signed_urls,
    signing_scheme,
)

TOKEN = "auth-token-0123456789"
SHARED = "shared-key-secret-abcdef"
PARAMS = {"CallSid": "CA1", "From": "+14158675309", "To": "+18005551212"}
PUBLIC = "https://example.com/dealer1"
SIGNED = "https://example.com/dealer1/api/voice/incoming"


def _accepted(urls: list[str], signature: str, scheme: SigningScheme | None) -> bool:
    if scheme is None:
        return False
    v = RequestValidator(scheme.secret)
    return any(v.validate(u, PARAMS, signature, algorithm=scheme.algorithm) for u in urls)


def _sig(url: str, secret: str = TOKEN, algorithm: str = HMAC_SHA1) -> str:
    return str(RequestValidator(secret).compute_signature(url, PARAMS, algorithm))


SHA1_ONLY = SigningKeys("sha1", TOKEN)


@pytest.mark.parametrize(
    "app_path",
    [
        "/api/voice/incoming",  # the proxy strips /dealer1
        "/dealer1/api/voice/incoming",  # it does not (or the app has root_path=/dealer1)
    ],
)
def test_the_public_url_with_its_prefix_is_what_twilio_signed(app_path: str) -> None:
    urls = signed_urls(PUBLIC + "/", app_path, "", {}, trust_forwarded=False)
    assert SIGNED in urls
    assert _accepted(urls, _sig(SIGNED), signing_scheme(SHA1_ONLY, None))
    # a signature over the URL without the prefix, or the internal one, is not
    for wrong in ("https://example.com/api/voice/incoming", "http://10.0.0.5:8080" + app_path):
        assert not _accepted(urls, _sig(wrong), signing_scheme(SHA1_ONLY, None))


def test_the_query_is_part_of_the_url() -> None:
    urls = signed_urls(
        PUBLIC, "/api/voice/return-to-ai", "session_id=s1", {}, trust_forwarded=False
    )
    assert urls == ["https://example.com/dealer1/api/voice/return-to-ai?session_id=s1"]


def test_forwarded_headers_count_only_when_trusted_and_keep_the_prefix() -> None:
    headers = {"x-forwarded-proto": "https, http", "x-forwarded-host": "dealer.example.org"}
    assert signed_urls(PUBLIC, "/api/voice/incoming", "", headers, trust_forwarded=False) == [
        SIGNED
    ]
    urls = signed_urls(PUBLIC, "/api/voice/incoming", "", headers, trust_forwarded=True)
    # without X-Forwarded-Prefix the configured prefix is the public one
    assert "https://dealer.example.org/dealer1/api/voice/incoming" in urls
    with_prefix = {**headers, "x-forwarded-prefix": "/shop7/"}
    urls = signed_urls(PUBLIC, "/api/voice/incoming", "", with_prefix, trust_forwarded=True)
    assert "https://dealer.example.org/shop7/api/voice/incoming" in urls
    assert _accepted(
        urls,
        _sig("https://dealer.example.org/shop7/api/voice/incoming"),
        signing_scheme(SHA1_ONLY, None),
    )
    # no public URL configured (escalation without one): the forwarded URL alone
    assert signed_urls(None, "/api/voice/x", "", with_prefix, trust_forwarded=True) == [
        "https://dealer.example.org/shop7/api/voice/x"
    ]


@pytest.mark.parametrize(
    "bad",
    [
        {"x-forwarded-proto": "https"},  # no host
        {"x-forwarded-host": "evil.example"},  # no proto
        {"x-forwarded-proto": "https", "x-forwarded-host": "a/b"},
        {"x-forwarded-proto": "https", "x-forwarded-host": "h", "x-forwarded-prefix": "x?y"},
    ],
)
def test_incomplete_or_malformed_forwarded_headers_add_nothing(bad: dict[str, str]) -> None:
    assert signed_urls(PUBLIC, "/p", "", bad, trust_forwarded=True) == [
        "https://example.com/dealer1/p"
    ]


def test_the_media_stream_handshake_is_signed_over_the_wss_url() -> None:
    headers = {"x-forwarded-proto": "https", "x-forwarded-host": "fw.example.com"}
    urls = signed_urls(
        PUBLIC, "/api/voice/media-stream", "", headers, trust_forwarded=True, websocket=True
    )
    assert urls == [
        "wss://example.com/dealer1/api/voice/media-stream",
        "wss://fw.example.com/dealer1/api/voice/media-stream",
    ]
    plain = signed_urls(
        "http://localhost:8080", "/ws", "", {}, trust_forwarded=False, websocket=True
    )
    assert plain == ["ws://localhost:8080/ws"]


def test_sha256_with_the_shared_key_when_configured() -> None:
    both = SigningKeys("both", TOKEN, SHARED, "webhooks_sharedkey_1")
    header = "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256"
    scheme = signing_scheme(both, header)
    assert scheme == SigningScheme(HMAC_SHA256, SHARED)
    assert _accepted([SIGNED], _sig(SIGNED, SHARED, HMAC_SHA256), scheme)
    # the SHA-1 signature of the same request is not a SHA-256 one
    assert not _accepted([SIGNED], _sig(SIGNED), scheme)
    # without the header: the auth token and SHA-1 ("both")
    assert signing_scheme(both, None) == SigningScheme(HMAC_SHA1, TOKEN)
    # another key id is refused
    assert signing_scheme(both, "key=other,algorithm=HMAC_SHA256") is None


def test_the_header_cannot_choose_a_check_that_is_not_configured() -> None:
    sha256_only = SigningKeys("sha256", TOKEN, SHARED)
    assert signing_scheme(sha256_only, None) is None  # SHA-1 not accepted
    assert signing_scheme(sha256_only, "algorithm=HMAC_SHA1") is None
    assert signing_scheme(sha256_only, "key=k,algorithm=hmac_sha256") == SigningScheme(
        HMAC_SHA256, SHARED
    )
    assert signing_scheme(SHA1_ONLY, "key=k,algorithm=HMAC_SHA256") is None  # no shared key
    assert signing_scheme(SigningKeys("both", TOKEN), "algorithm=HMAC_SHA256") is None
    assert signing_scheme(SHA1_ONLY, "algorithm=HMAC_MD5") is None
    assert signing_scheme(SigningKeys("sha1", None), None) is None  # no auth token


def test_known_twilio_vector_through_the_rule() -> None:
    """TWILIO.md's vector: token 12345 over https://mycompany.com/myapp.php?foo=1&bar=2."""
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+14158675309",
        "Digits": "1234",
        "From": "+14158675309",
        "To": "+18005551212",
    }
    urls = signed_urls(
        "https://mycompany.com", "/myapp.php", "foo=1&bar=2", {}, trust_forwarded=False
    )
    scheme = signing_scheme(SigningKeys("sha1", "12345"), None)
    assert scheme is not None
    v = RequestValidator(scheme.secret)
    assert any(v.validate(u, params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=") for u in urls)


_text = st.text(alphabet=string.printable, max_size=80)


@given(
    path=st.text(alphabet=string.ascii_letters + "/-_", max_size=40).map(lambda p: "/" + p),
    query=_text,
    proto=_text,
    host=_text,
    prefix=st.one_of(st.none(), _text),
    trusted=st.booleans(),
    ws=st.booleans(),
)
def test_any_headers_give_urls_on_this_path_and_never_raise(
    path: str, query: str, proto: str, host: str, prefix: str | None, trusted: bool, ws: bool
) -> None:
    headers = {"x-forwarded-proto": proto, "x-forwarded-host": host}
    if prefix is not None:
        headers["x-forwarded-prefix"] = prefix
    urls = signed_urls(PUBLIC, path, query, headers, trust_forwarded=trusted, websocket=ws)
    assert urls[0].startswith("wss://example.com/dealer1" if ws else SIGNED[:25])
    assert all(path in u for u in urls)
    assert len(urls) == len(set(urls))
    if not trusted:
        assert all("example.com/" in u for u in urls)


@given(st.text(max_size=600))
def test_any_settings_header_parses_without_raising(header: str) -> None:
    parsed = parse_signature_settings(header)
    assert all(k == k.lower() for k in parsed)
    scheme = signing_scheme(SigningKeys("both", TOKEN, SHARED), header)
    assert scheme is None or scheme.algorithm in (HMAC_SHA1, HMAC_SHA256)
