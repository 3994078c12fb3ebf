"""The hunt list: who an escalation rings, in order. Normalising the request's staff
(E.164, no repeats), telling whether two entries are one person, and :class:`HuntList`,
a running escalation's own list (the people still to ring, who each attempt rang, who
went off duty), which claims, passes and duty changes reorder. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

import phonenumbers

from dealerline_common.logs import get_logger
from dealerline_common.messages import StaffContact
from dealerline_common.state import EscalationInfo

log = get_logger(__name__)


def e164(phone: str) -> str | None:
    """``phone`` as a valid E.164 number, or None."""
    try:
        parsed = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def hunt_list(staff: list[StaffContact]) -> list[StaffContact]:
    """The people to ring, in order: invalid or repeated numbers are left out (logged)."""
    out: list[StaffContact] = []
    seen: set[str] = set()
    for person in staff:
        number = e164(person.phone)
        if number is None:
            log.warning("staff number is not a valid E.164 number; skipped", staff=person.name)
            continue
        if number in seen:
            continue
        seen.add(number)
        out.append(person.model_copy(update={"phone": number}))
    return out


def same_person(a: StaffContact, b: StaffContact) -> bool:
    """Whether two hunt-list entries are one team member: the same staff id when both
    have one (a person may change their number), else the same (normalised) number."""
    if a.staff_id is not None and b.staff_id is not None:
        return a.staff_id == b.staff_id
    return a.phone == b.phone


@dataclass
class HuntList:
    """A running escalation's list: ``queue`` the people still to ring, in order (built
    on the first look at the state, see :meth:`people`); ``rung`` who each attempt rang;
    ``off_duty`` the staff ids not to ring any more."""

    staff: list[StaffContact]  # the request's list, normalised (see hunt_list)
    queue: list[StaffContact] | None = None
    rung: dict[int, StaffContact] = field(default_factory=dict)
    off_duty: set[int] = field(default_factory=set)

    def people(self, esc: EscalationInfo) -> list[StaffContact]:
        """The people still to ring, in order, built on the first look at the state.

        A fresh run starts from the whole list. A resumed one (another replica rang the
        first ``attempts``) takes the list that replica kept in the state (claims, passes
        and duty changes applied); a state written before the list was kept there falls
        back to the request's order after the attempt count."""
        if self.queue is None:
            if esc.hunt is not None:
                self.queue = [p for p in esc.hunt if p.staff_id not in self.off_duty]
                if esc.attempts and esc.ringing is not None:
                    self.rung.setdefault(esc.attempts, esc.ringing)
                return self.queue
            done = min(esc.attempts, len(self.staff))
            self.queue = [p for p in self.staff[done:] if p.staff_id not in self.off_duty]
            if done and esc.attempts == done and self.staff[done - 1].name == esc.staff_name:
                self.rung.setdefault(done, self.staff[done - 1])
        return self.queue

    def snapshot(self) -> list[StaffContact]:
        """The list as it is to be kept in the state (``EscalationInfo.hunt``)."""
        return list(self.queue or [])

    def started(self, attempt: int, person: StaffContact, rest: list[StaffContact]) -> None:
        """Attempt ``attempt`` rings ``person``; ``rest`` is still to ring."""
        self.rung[attempt] = person
        self.queue = rest

    def put_at(self, index: int, person: StaffContact) -> None:
        """``person`` at ``index`` of the list (any other place they had is dropped)."""
        assert self.queue is not None
        rest = [p for p in self.queue if not same_person(p, person)]
        rest.insert(index, person)
        self.queue = rest

    def drop(self, person: StaffContact) -> bool:
        """``person`` off the list; whether they were on it."""
        queue = self.queue or []
        listed = any(same_person(p, person) for p in queue)
        self.queue = [p for p in queue if not same_person(p, person)]
        return listed

    def go_off_duty(self, staff_id: int) -> int | None:
        """``staff_id`` is not rung any more: how many entries left the list (None when
        the list is not built yet: it leaves them out when it is)."""
        self.off_duty.add(staff_id)
        if self.queue is None:
            return None
        before = len(self.queue)
        self.queue = [p for p in self.queue if p.staff_id != staff_id]
        return before - len(self.queue)

    def back_on_duty(self, staff_id: int | None) -> None:
        """``staff_id`` may be rung again (claiming is coming back on)."""
        if staff_id is not None:
            self.off_duty.discard(staff_id)

    def is_off_duty(self, person: StaffContact) -> bool:
        return person.staff_id in self.off_duty
