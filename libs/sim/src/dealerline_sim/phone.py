"""Twilio's side of an inbound phone call, for tests and the offline demo.

The simulator behaves as real Twilio does:

- the incoming-call webhook is a signed, form-encoded POST with Twilio's parameters;
- the TwiML answer must be ``<Response><Connect><Stream url="wss://…">`` (443, no query);
- the bidirectional Media Stream sends ``connected``, ``start`` (sequenceNumber "1"), then
  ``media`` frames of 160 mu-law bytes every 20 ms (``pace`` times faster in simulated
  time), ``dtmf`` and finally ``stop``; every message after ``start`` carries the next
  sequenceNumber;
- what the server sends back (``media``/``mark``/``clear``) is played out on a real-time
  clock: a mark is echoed only once the audio queued before it has played, ``clear``
  drops unplayed audio and echoes every pending mark at once; anything else is recorded
  in ``Call.protocol_errors`` (Twilio error 31924).

Typical use::

    async with PhoneSimulator("http://127.0.0.1:8080", "https://dealer.example.com",
                              auth_token, pace=4.0) as sim:
        async with await sim.place_call("+14155550100", "+14155550199") as call:
            await call.wait_until_quiet(quiet_s=1.0, timeout_s=60)   # the greeting
            await call.say("I'd like to book an oil change.")
            await call.wait_until_quiet(quiet_s=1.0, timeout_s=60)   # the reply
        await call.transcribe_heard(Transcriber())

With Twilio's REST side (``dealerline_sim.twilio_rest.TwilioSim``) a call lives on after its
first stream: ``TwilioSim.phone(...)`` (or ``TwilioSim.attach``) makes the simulator hand
every placed call to it, so the application can redirect the call (``calls(sid).update(url=…)``:
the stream gets ``stop`` and closes, the new TwiML runs — a ``<Dial><Conference>`` or a new
``<Connect><Stream>``), hang it up, or find it in a conference. The same :class:`Call` keeps
working across streams: ``call.streams`` lists them (:class:`StreamRecord`, each with its
own heard segments), ``await call.wait_for_stream(2)`` waits for the second one,
``call.say`` always speaks into the current one, and ``call.closed`` is set only when the
*call* ends. Without a host, the server closing the socket ends the call, as before.

This module is the simulator's front door: :class:`PhoneSimulator` (signing, webhooks,
placing calls) lives here and every public name of the call's parts is re-exported, so
``from dealerline_sim.phone import Call, run_script, …`` keeps working. The parts:
``call`` (the call and its streams), ``call_records`` (what it recorded), ``caller_line``
(caller → server frames), ``playout`` (server → caller audio, marks, clear),
``media_stream`` (the wire format), ``stream_socket`` (the WebSocket and its tasks),
``caller_script`` (scripted callers), ``caller_speech`` (lines with pauses, recorded
audio), ``talk_over`` (the caller talks over the agent: backchannels and interruptions),
``sids`` (Twilio-shaped SIDs).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import httpx
from twilio.request_validator import RequestValidator

from dealerline_sim.call import Call, CallHost
from dealerline_sim.call_records import (
    ClearRecord,
    HeardSegment,
    MarkEcho,
    SaidUtterance,
    StreamEndReason,
    StreamRecord,
    TalkOverRecord,
    join_heard,
)
from dealerline_sim.caller_line import SilenceMode
from dealerline_sim.caller_script import CallerScript, ScriptItem, Turn, run_script
from dealerline_sim.caller_speech import Recorded, SpokenLine, has_pauses, synthesize_line
from dealerline_sim.sids import new_sid
from dealerline_sim.talk_over import TalkOver, talk_over
from dealerline_sim.twiml import (
    SimulatorError,
    StreamInstruction,
    TwimlError,
    parse_connect_stream,
)
from dealerline_sim.voice import Transcriber, synthesize_ulaw

__all__ = [
    "Call",
    "CallHost",
    "CallerScript",
    "ClearRecord",
    "HeardSegment",
    "MarkEcho",
    "PhoneSimulator",
    "Recorded",
    "SaidUtterance",
    "ScriptItem",
    "SilenceMode",
    "SimulatorError",
    "SpokenLine",
    "StreamEndReason",
    "StreamInstruction",
    "StreamRecord",
    "TalkOver",
    "TalkOverRecord",
    "Transcriber",
    "Turn",
    "TwimlError",
    "WebhookError",
    "join_heard",
    "new_sid",
    "run_script",
    "talk_over",
]

TWILIO_USER_AGENT: Final = "TwilioProxy/1.1"
FORGED_TOKEN: Final = "0" * 32


class WebhookError(SimulatorError):
    """The webhook did not answer 200 with TwiML (Twilio error 11200 and the like)."""

    def __init__(self, message: str, response: httpx.Response) -> None:
        super().__init__(f"{message}: HTTP {response.status_code} {response.text[:500]!r}")
        self.response = response


class PhoneSimulator:
    """Plays Twilio for a gateway listening at ``http_base`` whose public (signed) base
    URL is ``public_url``.

    ``pace`` > 1 runs simulated time faster than real time: caller frames go out every
    ``20 ms / pace`` and the playout clock plays outbound audio ``pace`` times faster.
    """

    def __init__(
        self,
        http_base: str,
        public_url: str,
        auth_token: str,
        *,
        account_sid: str | None = None,
        pace: float = 1.0,
        caller_voice: str = "jm_kumo",
        silence: SilenceMode = "digital",
        sign_stream_handshake: bool = True,
        forwarded_headers: bool = False,
        http_timeout_s: float = 30.0,
        webhook_key: str | None = None,
        webhook_key_id: str = "webhooks_sharedkey_sim",
    ) -> None:
        if pace <= 0:
            raise ValueError("pace must be positive")
        self.http_base = http_base.rstrip("/")
        self.public_url = public_url.rstrip("/")
        self.auth_token = auth_token
        self.account_sid = account_sid or new_sid("AC")
        self.pace = pace
        self.caller_voice = caller_voice
        self.silence: SilenceMode = silence
        self.sign_stream_handshake = sign_stream_handshake
        self.forwarded_headers = forwarded_headers
        self.validator = RequestValidator(auth_token)
        # A Webhooks Rule matching every URL: HMAC-SHA256 with its SharedKey instead.
        self.webhook_key = webhook_key
        self.webhook_key_id = webhook_key_id
        self._sha256 = RequestValidator(webhook_key) if webhook_key is not None else None
        self.calls: list[Call] = []
        self._call_observers: list[Callable[[Call], None]] = []
        self._http = httpx.AsyncClient(
            base_url=self.http_base, timeout=http_timeout_s, trust_env=False
        )

    def add_call_observer(self, observer: Callable[[Call], None]) -> None:
        """``observer(call)`` runs for every placed call once its TwiML has been accepted,
        before its stream opens (``TwilioSim`` registers the call and becomes its host)."""
        self._call_observers.append(observer)

    # -- signing and webhooks ------------------------------------------------------------

    def public_url_for(self, path: str) -> str:
        """The URL Twilio would request (and sign) for ``path``."""
        if path.startswith(("http://", "https://", "ws://", "wss://")):
            return path
        return self.public_url + (path if path.startswith("/") else "/" + path)

    def sign(self, url_or_path: str, params: Mapping[str, str] | None = None) -> str:
        """``X-Twilio-Signature`` for a request to ``url_or_path`` with form ``params``
        (HMAC-SHA1 with the auth token, or HMAC-SHA256 with ``webhook_key``)."""
        url, form = self.public_url_for(url_or_path), dict(params or {})
        if self._sha256 is not None:
            return str(self._sha256.compute_signature(url, form, "HMAC_SHA256"))
        return str(self.validator.compute_signature(url, form))

    def signature_headers(
        self, url_or_path: str, params: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """The signature headers Twilio sends with a request (and a WebSocket handshake):
        ``X-Twilio-Signature``, plus ``X-Twilio-Webhooks-Signature-Settings`` when a
        Webhooks Rule's SharedKey signs (``webhook_key``)."""
        headers = {"X-Twilio-Signature": self.sign(url_or_path, params)}
        if self._sha256 is not None:
            headers["X-Twilio-Webhooks-Signature-Settings"] = (
                f"key={self.webhook_key_id},algorithm=HMAC_SHA256"
            )
        return headers

    @staticmethod
    def forged_signature(url: str, params: Mapping[str, str] | None = None) -> str:
        """A well-formed signature made with the wrong auth token."""
        return str(RequestValidator(FORGED_TOKEN).compute_signature(url, dict(params or {})))

    def _local_path(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            parts = urlsplit(path)
            prefix = urlsplit(self.public_url).path.rstrip("/")
            p = (
                parts.path[len(prefix) :]
                if prefix and parts.path.startswith(prefix)
                else parts.path
            )
            return p + (f"?{parts.query}" if parts.query else "")
        return path if path.startswith("/") else "/" + path

    async def post_webhook(
        self,
        path: str,
        params: Mapping[str, str],
        *,
        forged: bool = False,
        unsigned: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """A form-encoded POST signed as Twilio signs it (over ``public_url + path``).

        ``forged=True`` signs with a wrong token; ``unsigned=True`` sends no signature.
        ``path`` may also be a full public URL (as found in TwiML ``action`` attributes).
        """
        url = self.public_url_for(path)
        form = {k: str(v) for k, v in params.items()}
        hdrs: dict[str, str] = {
            "User-Agent": TWILIO_USER_AGENT,
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
        }
        if self.forwarded_headers:
            pub = urlsplit(self.public_url)
            hdrs["X-Forwarded-Proto"] = pub.scheme
            hdrs["X-Forwarded-Host"] = pub.netloc
            if pub.path.rstrip("/"):  # the proxy strips the prefix and says so
                hdrs["X-Forwarded-Prefix"] = pub.path.rstrip("/")
        if forged:
            hdrs["X-Twilio-Signature"] = self.forged_signature(url, form)
        elif not unsigned:
            hdrs.update(self.signature_headers(url, form))
        hdrs.update(headers or {})
        return await self._http.post(self._local_path(path), data=form, headers=hdrs)

    def incoming_call_params(
        self, call_sid: str, from_number: str, to_number: str
    ) -> dict[str, str]:
        """The parameters of Twilio's incoming-call webhook."""
        return {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": call_sid,
            "CallStatus": "ringing",
            "Called": to_number,
            "CalledCity": "SAN FRANCISCO",
            "CalledCountry": "US",
            "CalledState": "CA",
            "CalledZip": "94105",
            "Caller": from_number,
            "CallerCity": "OAKLAND",
            "CallerCountry": "US",
            "CallerState": "CA",
            "CallerZip": "94612",
            "Direction": "inbound",
            "From": from_number,
            "FromCity": "OAKLAND",
            "FromCountry": "US",
            "FromState": "CA",
            "FromZip": "94612",
            "To": to_number,
            "ToCity": "SAN FRANCISCO",
            "ToCountry": "US",
            "ToState": "CA",
            "ToZip": "94105",
        }

    def local_ws_url(self, public_ws_url: str) -> str:
        """Map the public ``wss://`` stream URL from TwiML to where the gateway listens."""
        stream = urlsplit(public_ws_url)
        pub = urlsplit(self.public_url)
        if stream.hostname != pub.hostname:
            raise SimulatorError(
                f"<Stream url> host {stream.hostname!r} is not the public host "
                f"{pub.hostname!r} the gateway was configured with ({public_ws_url})"
            )
        local = urlsplit(self.http_base)
        scheme = "wss" if local.scheme == "https" else "ws"
        path = stream.path
        prefix = pub.path.rstrip("/")
        if prefix and path.startswith(prefix):
            path = path[len(prefix) :]
        return urlunsplit((scheme, local.netloc, local.path.rstrip("/") + path, "", ""))

    # -- calls ----------------------------------------------------------------------------

    async def prepare(self, *texts: str, voice: str | None = None) -> None:
        """Synthesize caller lines ahead of time (cached), so ``say`` starts at once; a
        line with pause marks is synthesized chunk by chunk."""
        for text in texts:
            if has_pauses(text):
                await synthesize_line(text, voice or self.caller_voice)
            else:
                await synthesize_ulaw(text, voice or self.caller_voice)

    async def place_call(
        self,
        from_number: str,
        to_number: str,
        *,
        call_sid: str | None = None,
        path: str = "/api/voice/incoming",
        extra_params: Mapping[str, str] | None = None,
        forged: bool = False,
        silence: SilenceMode | None = None,
    ) -> Call:
        """Ring the gateway: signed incoming-call webhook, TwiML check, Media Stream.

        Returns once ``connected`` and ``start`` have been sent; the caller's line then
        carries silence frames until :meth:`Call.say`.
        """
        sid = call_sid or new_sid("CA")
        params = self.incoming_call_params(sid, from_number, to_number)
        params.update(extra_params or {})
        resp = await self.post_webhook(path, params, forged=forged)
        if resp.status_code != 200:
            raise WebhookError("incoming-call webhook failed (Twilio error 11200)", resp)
        ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("text/xml", "application/xml"):
            raise WebhookError(
                f"incoming-call webhook answered Content-Type {ctype!r}, not TwiML XML", resp
            )
        instruction = parse_connect_stream(resp.text)
        call = Call(
            self,
            call_sid=sid,
            from_number=from_number,
            to_number=to_number,
            instruction=instruction,
            silence=silence or self.silence,
        )
        call.webhook_params = params
        call.webhook_url = self.public_url_for(path)
        self.calls.append(call)
        for observer in self._call_observers:
            observer(call)
        await call._open()
        return call

    async def aclose(self) -> None:
        """Hang up every open call and close the HTTP client."""
        for call in self.calls:
            await call.hangup()
        await self._http.aclose()

    async def __aenter__(self) -> PhoneSimulator:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
