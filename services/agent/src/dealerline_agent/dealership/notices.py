"""Texts and emails the agent sends a customer through the notifier (``notify.sms`` /
``notify.email`` on the ``DL_NOTIFY`` work queue, sent by the after-call service through
Twilio Messages or SMTP): a one-time verification code, and the notice to the OLD phone or
email that the contact details on file were changed."""

from __future__ import annotations

import hashlib

from dealerline_common.messages import NotificationJob

__all__ = ["code_text", "contact_change_notices"]


def code_text(
    session_id: str, nonce: str, to: str, code: str, dealership: str, ttl_s: float
) -> NotificationJob:
    minutes = max(1, round(ttl_s / 60))
    return NotificationJob(
        key=f"verify:{session_id}:{nonce}",
        channel="sms",
        session_id=session_id,
        to=to,
        body=(
            f"{dealership}: your verification code is {code}. It expires in {minutes} "
            "minutes. Never share it with anyone who calls you."
        ),
        secret=True,
    )


def _key(session_id: str, turn_id: str | None, channel: str, old: str) -> str:
    digest = hashlib.sha256(f"{turn_id}|{channel}|{old}".encode()).hexdigest()[:24]
    return f"contact-changed:{session_id}:{digest}"


def contact_change_notices(
    session_id: str,
    turn_id: str | None,
    dealership: str,
    *,
    old_phone: str | None,
    new_phone: str | None,
    old_email: str | None,
    new_email: str | None,
) -> list[NotificationJob]:
    """One notice to each old phone/email that was replaced or removed (none when
    unchanged): erasing the number on file would otherwise also silence the codes. The
    key is the same for a replayed turn, so a retry sends nothing twice."""
    changed = [
        what
        for what, old, new in (
            ("phone number", old_phone, new_phone),
            ("email", old_email, new_email),
        )
        if old is not None and new != old  # replaced or removed
    ]
    if not changed:
        return []
    body = (
        f"{dealership}: the {' and '.join(changed)} on your customer record "
        "were changed or removed during a phone call. If this was not you, please call the dealership "
        "right away."
    )
    jobs: list[NotificationJob] = []
    if old_phone and new_phone != old_phone:
        key = _key(session_id, turn_id, "sms", old_phone)
        jobs.append(
            NotificationJob(key=key, channel="sms", session_id=session_id, to=old_phone, body=body)
        )
    if old_email and new_email != old_email:
        jobs.append(
            NotificationJob(
                key=_key(session_id, turn_id, "email", old_email),
                channel="email",
                session_id=session_id,
                to=old_email,
                subject=f"{dealership}: your contact details were changed",
                body=body,
            )
        )
    return jobs
