"""What the aftercall service left behind for one call, read back for ``make demo``: the
call record (with its transcript) from the database, the email the service desk received
and the texts the caller got."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from dealerline_common.db.engine import create_engine_from_url, session_factory
from dealerline_common.db.models import Call, Delivery

from .twilio_rest import SentMessage


@dataclass
class CallRecord:
    row: dict[str, Any]
    turns: list[dict[str, Any]]
    deliveries: list[dict[str, Any]] = field(default_factory=list)


async def wait_for_record(database_url: str, session_id: str, timeout_s: float) -> CallRecord:
    """Poll the database until the call's record is complete (``recorded_at`` set)."""
    engine = create_engine_from_url(database_url)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            async with session_factory(engine)() as session:
                call = (
                    await session.execute(
                        select(Call)
                        .where(Call.session_id == session_id)
                        .options(selectinload(Call.turns))
                    )
                ).scalar()
                if call is not None and call.recorded_at is not None:
                    sent = (
                        (
                            await session.execute(
                                select(Delivery).where(Delivery.session_id == session_id)
                            )
                        )
                        .scalars()
                        .all()
                    )
                    return CallRecord(
                        row={
                            c.key: getattr(call, c.key)
                            for c in Call.__table__.columns
                            if c.key != "id"
                        },
                        turns=[
                            {
                                "role": t.role,
                                "text": t.text,
                                "at": t.at,
                                "interrupted": t.interrupted,
                            }
                            for t in call.turns
                        ],
                        deliveries=[
                            {
                                "channel": d.channel,
                                "key": d.key,
                                "status": d.status,
                                "attempts": d.attempts,
                            }
                            for d in sent
                        ],
                    )
            if time.monotonic() > deadline:
                raise TimeoutError(f"no call record for {session_id} after {timeout_s:.0f}s")
            await asyncio.sleep(0.5)
    finally:
        await engine.dispose()


def format_record(record: CallRecord) -> str:
    r = record.row
    out = ["── Call record " + "─" * 54]
    started = r["started_at"]
    out.append(f"  session     : {r['session_id']}   (call {r['call_sid']})")
    out.append(f"  caller      : {r['customer_name'] or 'unknown'}  {mask(r['caller_phone'])}")
    out.append(
        f"  time        : {started:%Y-%m-%d %H:%M:%S} UTC, {r['duration_s'] or 0:.1f} s, "
        f"ended by {r['end_reason']}"
    )
    out.append(f"  outcome     : {r['outcome']}   barge-ins: {r['barge_ins']}")
    out.append(f"  summary     : {r['summary']}")
    for appt in r["appointments"] or []:
        out.append(f"  appointment : {appt}")
    if r["latency"]:
        stages = [t.get("stages_ms", {}) for t in r["latency"]]
        totals = [st.get("total", st.get("greeting")) for st in stages]
        shown = ", ".join(f"{v:.0f}" for v in totals if isinstance(v, int | float))
        out.append(f"  latency     : {len(stages)} turns, to first audio (ms): {shown}")
    out.append("  transcript  :")
    for t in record.turns:
        offset = (t["at"] - started).total_seconds()
        cut = " (interrupted)" if t["interrupted"] else ""
        out.append(f"    {offset:6.1f}s {t['role']:<7} {t['text']}{cut}")
    for d in record.deliveries:
        out.append(f"  delivery    : {d['channel']} {d['status']} after {d['attempts']} attempt(s)")
    return "\n".join(out)


def format_email(recipients: list[str], message: EmailMessage) -> str:
    out = ["── Email the service desk received " + "─" * 34]
    out.append(f"  to      : {', '.join(recipients)}")
    out.append(f"  from    : {message['From']}")
    out.append(f"  subject : {message['Subject']}")
    body = message.get_body(preferencelist=("plain",))
    text = body.get_content() if body is not None else ""
    out.extend("  | " + line for line in str(text).rstrip().splitlines())
    return "\n".join(out)


def format_text(message: SentMessage) -> str:
    return (
        "── Text the caller received " + "─" * 42 + "\n"
        f"  to {mask(message.to)} from {message.from_} ({message.sid})\n  | {message.body}"
    )


def mask(number: str | None) -> str:
    from dealerline_common.logs import mask_phone

    return mask_phone(number) if number else "(no number)"
