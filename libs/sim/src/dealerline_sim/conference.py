"""Conference rooms as ``<Dial><Conference>`` builds them, with Twilio's semantics.

- A room is found by its name while it is ``init`` or ``in-progress``; joining a name whose
  last room has ``completed`` creates a new room (new ``CF`` sid, same friendly name).
- It **starts** (``in-progress``, ``conference-start``) once it holds at least two
  participants and one of them has ``startConferenceOnEnter`` (default true).
- When a participant with ``endConferenceOnExit`` (default false) leaves, it **ends** for
  everyone: each remaining participant leaves (``participant-leave``) and its ``<Dial>``
  returns, so that call goes on with the verb after ``<Dial>`` (or the Dial's ``action``).
  It also ends when the last participant leaves.
- Conference status callbacks go to the ``statusCallback`` of the first participant that
  gave one (later participants' callbacks are ignored), for the ``statusCallbackEvent``
  words it listed (``start end join leave``; default ``start end``): ``conference-start``,
  ``conference-end`` (with ``ReasonConferenceEnded``, ``CallSidEndingConference``),
  ``participant-join``, ``participant-leave`` (with ``ReasonParticipantLeft``,
  ``ParticipantCallStatus``). ``SequenceNumber`` counts from 1 per room; every callback is
  signed and subject to the simulator's fault rules.

Tests read ``sim.conferences["support_sess1"]`` (the latest room of that name):
``participants`` (present now), ``participants_history`` (everyone who ever joined, with
join/leave times and reasons), :meth:`Conference.held_together` to prove two calls were
bridged, ``started``/``ended`` events and ``reason_ended``.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from dealerline_sim.callbacks import Callback, CallbackDispatcher
from dealerline_sim.timeline import SimClock, Timeline
from dealerline_sim.twiml import TwimlVerb

__all__ = ["Conference", "Conferences", "Participant"]

_API = "/2010-04-01"
_EVENT_WORDS = {
    "conference-start": "start",
    "conference-end": "end",
    "participant-join": "join",
    "participant-leave": "leave",
}


def _new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass(eq=False)
class Participant:
    """One call's stay in a room. ``joined_index``/``left_index`` are timeline indexes,
    which order events exactly even when simulated time hardly moves."""

    call_sid: str
    conference_sid: str
    label: str | None
    start_conference_on_enter: bool
    end_conference_on_exit: bool
    muted: bool
    joined_sim_s: float
    joined_at: float
    joined_index: int
    left_sim_s: float | None = None
    left_at: float | None = None
    left_index: int | None = None
    leave_reason: str | None = None
    left: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def present(self) -> bool:
        return self.left_index is None


class Conference:
    """One room (one ``CF`` sid)."""

    def __init__(self, name: str, account_sid: str, sim_s: float) -> None:
        self.sid = _new_sid("CF")
        self.friendly_name = name
        self.account_sid = account_sid
        self.status = "init"
        self.created_sim_s = sim_s
        self.updated_sim_s = sim_s
        self.started_sim_s: float | None = None
        self.ended_sim_s: float | None = None
        self.started_index: int | None = None
        self.ended_index: int | None = None
        self.reason_ended: str | None = None
        self.call_sid_ending: str | None = None
        self.participants: dict[str, Participant] = {}
        self.participants_history: list[Participant] = []
        self.started = asyncio.Event()
        self.ended = asyncio.Event()
        self.callback_url: str | None = None
        self.callback_method = "POST"
        self.callback_events: set[str] = set()
        self._sequence = itertools.count(1)

    def __repr__(self) -> str:
        return f"<Conference {self.friendly_name} {self.sid} {self.status}>"

    @property
    def max_participants_at_once(self) -> int:
        """The most participants present together (counted over join/leave order)."""
        marks: list[tuple[int, int]] = []
        for p in self.participants_history:
            marks.append((p.joined_index, 1))
            if p.left_index is not None:
                marks.append((p.left_index, -1))
        best = now = 0
        for _, delta in sorted(marks):
            now += delta
            best = max(best, now)
        return best

    def held_together(self, *call_sids: str) -> bool:
        """True if all ``call_sids`` were in this room at once while it was in progress."""
        if self.started_index is None:
            return False
        starts = [self.started_index]
        ends = [self.ended_index if self.ended_index is not None else 1 << 62]
        for sid in call_sids:
            stays = [p for p in self.participants_history if p.call_sid == sid]
            if not stays:
                return False
            stay = stays[-1]  # the latest stay of each call
            starts.append(stay.joined_index)
            ends.append(stay.left_index if stay.left_index is not None else 1 << 62)
        return max(starts) < min(ends)

    def history_of(self, call_sid: str) -> list[Participant]:
        return [p for p in self.participants_history if p.call_sid == call_sid]

    def resource(self, clock: SimClock) -> dict[str, Any]:
        """The REST Conference resource (``api.v2010.account.conference``)."""
        uri = f"{_API}/Accounts/{self.account_sid}/Conferences/{self.sid}"
        return {
            "account_sid": self.account_sid,
            "date_created": clock.rfc2822(self.created_sim_s),
            "date_updated": clock.rfc2822(self.updated_sim_s),
            "api_version": "2010-04-01",
            "friendly_name": self.friendly_name,
            "region": "us1",
            "sid": self.sid,
            "status": self.status,
            "uri": uri + ".json",
            "subresource_uris": {
                "participants": uri + "/Participants.json",
                "recordings": uri + "/Recordings.json",
            },
            "reason_conference_ended": self.reason_ended,
            "call_sid_ending_conference": self.call_sid_ending,
        }

    def participant_resource(self, p: Participant, clock: SimClock) -> dict[str, Any]:
        """The REST Participant resource (``api.v2010.account.conference.participant``)."""
        return {
            "account_sid": self.account_sid,
            "call_sid": p.call_sid,
            "label": p.label,
            "call_sid_to_coach": None,
            "coaching": False,
            "conference_sid": self.sid,
            "date_created": clock.rfc2822(p.joined_sim_s),
            "date_updated": clock.rfc2822(p.left_sim_s or p.joined_sim_s),
            "end_conference_on_exit": p.end_conference_on_exit,
            "muted": p.muted,
            "hold": False,
            "start_conference_on_enter": p.start_conference_on_enter,
            "status": "connected" if p.present else "complete",
            "queue_time": "0",
            "uri": f"{_API}/Accounts/{self.account_sid}/Conferences/{self.sid}"
            f"/Participants/{p.call_sid}.json",
        }


class Conferences:
    """Every room of one simulated account, by sid and by (latest) friendly name."""

    def __init__(
        self,
        account_sid: str,
        clock: SimClock,
        timeline: Timeline,
        dispatcher: CallbackDispatcher,
    ) -> None:
        self.account_sid = account_sid
        self.clock = clock
        self.timeline = timeline
        self.dispatcher = dispatcher
        self.by_sid: dict[str, Conference] = {}
        self._by_name: dict[str, Conference] = {}

    def __getitem__(self, name: str) -> Conference:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> Conference | None:
        return self._by_name.get(name)

    def all(self) -> list[Conference]:
        return list(self.by_sid.values())

    # -- membership -------------------------------------------------------------------------

    def join(self, call_sid: str, noun: TwimlVerb, label: str | None = None) -> Participant:
        """``call_sid`` enters the room named by the ``<Conference>`` noun."""
        name = noun.text
        now = self.clock.now_s()
        conf = self._by_name.get(name)
        if conf is None or conf.status == "completed":
            conf = Conference(name, self.account_sid, now)
            self.by_sid[conf.sid] = conf
            self._by_name[name] = conf
        if conf.callback_url is None and noun.attrs.get("statusCallback"):
            conf.callback_url = noun.attrs["statusCallback"]
            conf.callback_method = (noun.attrs.get("statusCallbackMethod") or "POST").upper()
            words = (noun.attrs.get("statusCallbackEvent") or "start end").replace(",", " ")
            conf.callback_events = {w.strip() for w in words.split() if w.strip()}
        event = self.timeline.record(
            "conference",
            call_sid,
            event="join",
            name=name,
            conference_sid=conf.sid,
            reason=None,
        )
        p = Participant(
            call_sid=call_sid,
            conference_sid=conf.sid,
            label=noun.attrs.get("participantLabel") or label,
            start_conference_on_enter=noun.bool_attr("startConferenceOnEnter", True),
            end_conference_on_exit=noun.bool_attr("endConferenceOnExit", False),
            muted=noun.bool_attr("muted", False),
            joined_sim_s=now,
            joined_at=time.time(),
            joined_index=event.index,
        )
        conf.participants[call_sid] = p
        conf.participants_history.append(p)
        conf.updated_sim_s = now
        self._callback(conf, "participant-join", p)
        if (
            conf.status == "init"
            and len(conf.participants) >= 2
            and any(x.start_conference_on_enter for x in conf.participants.values())
        ):
            conf.status = "in-progress"
            conf.started_sim_s = now
            start = self.timeline.record(
                "conference",
                call_sid,
                event="start",
                name=name,
                conference_sid=conf.sid,
                reason=None,
            )
            conf.started_index = start.index
            conf.started.set()
            self._callback(conf, "conference-start", p)
        return p

    def leave(self, p: Participant, reason: str, call_status: str = "completed") -> None:
        """``p`` leaves (hung up, redirected, removed). May end the room."""
        conf = self.by_sid[p.conference_sid]
        if not p.present:
            return
        self._remove(conf, p, reason, call_status)
        if conf.status == "completed":
            return
        if p.end_conference_on_exit:
            self.end(conf, "participant-with-end-conference-on-exit-left", p.call_sid)
        elif not conf.participants:
            self.end(conf, "last-participant-left", p.call_sid)

    def end(self, conf: Conference, reason: str, ending_call_sid: str | None = None) -> None:
        """The room ends for everyone still in it; their ``<Dial>`` returns."""
        if conf.status == "completed":
            return
        for other in list(conf.participants.values()):
            self._remove(conf, other, reason.replace("-", "_"), "in-progress")
        now = self.clock.now_s()
        conf.status = "completed"
        conf.ended_sim_s = now
        conf.updated_sim_s = now
        conf.reason_ended = reason
        conf.call_sid_ending = ending_call_sid
        event = self.timeline.record(
            "conference",
            ending_call_sid,
            event="end",
            name=conf.friendly_name,
            conference_sid=conf.sid,
            reason=reason,
        )
        conf.ended_index = event.index
        conf.ended.set()
        extra = {"ReasonConferenceEnded": reason}
        if ending_call_sid:
            extra["CallSidEndingConference"] = ending_call_sid
        self._callback(conf, "conference-end", None, extra)
        self.dispatcher.finish(conf.sid)

    def _remove(self, conf: Conference, p: Participant, reason: str, call_status: str) -> None:
        conf.participants.pop(p.call_sid, None)
        now = self.clock.now_s()
        event = self.timeline.record(
            "conference",
            p.call_sid,
            event="leave",
            name=conf.friendly_name,
            conference_sid=conf.sid,
            reason=reason,
        )
        p.left_sim_s = now
        p.left_at = time.time()
        p.left_index = event.index
        p.leave_reason = reason
        conf.updated_sim_s = now
        p.left.set()
        self._callback(
            conf,
            "participant-leave",
            p,
            {"ReasonParticipantLeft": reason, "ParticipantCallStatus": call_status},
        )

    # -- callbacks --------------------------------------------------------------------------

    def _callback(
        self,
        conf: Conference,
        event: str,
        p: Participant | None,
        extra: dict[str, str] | None = None,
    ) -> None:
        if conf.callback_url is None or _EVENT_WORDS[event] not in conf.callback_events:
            return
        seq = next(conf._sequence)
        params: dict[str, str] = {
            "AccountSid": self.account_sid,
            "ConferenceSid": conf.sid,
            "FriendlyName": conf.friendly_name,
            "StatusCallbackEvent": event,
            "SequenceNumber": str(seq),
            "Timestamp": self.clock.rfc2822(),
        }
        if p is not None:
            params.update(
                {
                    "CallSid": p.call_sid,
                    "Muted": str(p.muted).lower(),
                    "Hold": "false",
                    "Coaching": "false",
                    "EndConferenceOnExit": str(p.end_conference_on_exit).lower(),
                    "StartConferenceOnEnter": str(p.start_conference_on_enter).lower(),
                }
            )
            if p.label:
                params["ParticipantLabel"] = p.label
        params.update(extra or {})
        self.dispatcher.submit(
            Callback(
                kind="conference",
                key=conf.sid,
                url=conf.callback_url,
                method=conf.callback_method,
                params=params,
                status=event,
                sequence=seq,
                call_sid=p.call_sid if p is not None else None,
            )
        )
