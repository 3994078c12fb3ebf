"""Whether the caller is the customer they ask about: the rules and the arithmetic the
verification tools use, kept apart from the tools so each rule is testable on its own.

A caller is verified for one customer (``IdentityCheck.verified_customer_id``) by:

- the signed caller ID (the call's ``caller_phone``, never a number the caller says)
  matching the number on file, plus one fact only the customer knows: a plate, the last
  six characters of a VIN, or the service of an upcoming appointment; or
- a six-digit one-time code texted to the number on file: only its salted PBKDF2 hash is
  kept in the session state, with a short deadline and a few tries, compared in constant
  time; the digits are never logged or returned to the LLM;
- creating the customer during this call (nothing was on file before).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from dealerline_common.db.phone import try_normalize_phone
from dealerline_common.state import (
    AppointmentInfo,
    ConversationState,
    CustomerInfo,
    IdentityCheck,
    PendingCode,
)

__all__ = [
    "CODE_DIGITS",
    "IdentityRules",
    "caller_id_matches",
    "check_code",
    "digits_of",
    "fact_matches",
    "new_code",
]

CODE_DIGITS = 6
_PBKDF2_ROUNDS = 20_000


@dataclass(frozen=True)
class IdentityRules:
    """How long a texted code lives and how many tries a call gets; and how many wrong
    facts and texted codes one customer gets across calls within a rolling window
    (:mod:`.limits`)."""

    code_ttl_s: float = 300.0
    code_attempts: int = 3
    max_codes_per_call: int = 3
    max_fact_failures: int = 3
    customer_failures: int = 5
    customer_codes: int = 5
    customer_window_s: float = 86400.0


def caller_id_matches(state: ConversationState, customer: CustomerInfo) -> bool:
    """The call's own (signed) caller ID is the customer's number on file."""
    caller = try_normalize_phone(state.caller_phone) if state.caller_phone else None
    on_file = try_normalize_phone(customer.phone) if customer.phone else None
    return caller is not None and caller == on_file


def _alnum(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z]", "", text).upper()


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def fact_matches(
    fact: str, customer: CustomerInfo, upcoming: list[AppointmentInfo], service: str | None
) -> bool:
    """``fact`` is a plate or the last six of a VIN of one of ``customer``'s vehicles, or
    ``service`` (the service name ``fact`` resolved to) is that of an upcoming
    appointment. Whole values only: a part of a plate proves nothing."""
    given = _alnum(fact)
    if len(given) >= 2:
        for v in customer.vehicles:
            if v.plate and hmac.compare_digest(_alnum(v.plate), given):
                return True
            vin = _alnum(v.vin or "")
            if len(vin) >= 6 and given in (vin[-6:], vin):
                return True
    wanted = _words(service or "")
    return bool(wanted) and any(_words(a.service) == wanted for a in upcoming)


def digits_of(spoken: str) -> str:
    """The digits of a code as the caller gave it ("12 34 56", "1-2-3-4-5-6")."""
    return "".join(ch for ch in spoken if ch.isdigit())


def _digest(code: str, salt: bytes) -> str:
    return hashlib.pbkdf2_hmac("sha256", code.encode(), salt, _PBKDF2_ROUNDS).hex()


def new_code(customer_id: int, now: float, rules: IdentityRules) -> tuple[str, PendingCode]:
    """A fresh code (its digits, to text) and what the state keeps of it (its hash)."""
    code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
    salt = secrets.token_bytes(16)
    pending = PendingCode(
        customer_id=customer_id,
        salt=salt.hex(),
        digest=_digest(code, salt),
        expires_at=now + rules.code_ttl_s,
        attempts_left=rules.code_attempts,
    )
    return code, pending


def check_code(
    identity: IdentityCheck, customer_id: int, spoken: str, now: float
) -> tuple[str, IdentityCheck]:
    """Judge a code the caller gave: ``(outcome, the identity to keep)``; outcome is one
    of ``verified``, ``wrong``, ``locked`` (no tries left), ``expired``, ``none`` (no code
    pending for this customer)."""
    pending = identity.code
    if pending is None or pending.customer_id != customer_id:
        return "none", identity
    if now >= pending.expires_at:
        return "expired", identity.model_copy(update={"code": None})
    if pending.attempts_left <= 0:
        return "locked", identity.model_copy(update={"code": None})
    given = digits_of(spoken)
    expected = bytes.fromhex(pending.digest)
    actual = bytes.fromhex(_digest(given, bytes.fromhex(pending.salt)))
    if len(given) == CODE_DIGITS and hmac.compare_digest(actual, expected):
        done = identity.model_copy(
            update={"code": None, "verified_customer_id": customer_id, "method": "texted_code"}
        )
        return "verified", done
    left = pending.attempts_left - 1
    if left <= 0:
        return "locked", identity.model_copy(update={"code": None})
    kept = pending.model_copy(update={"attempts_left": left})
    return "wrong", identity.model_copy(update={"code": kept})
