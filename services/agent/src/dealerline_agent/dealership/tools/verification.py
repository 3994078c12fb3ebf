"""Verification tools: proving the caller is the customer on the state, by the call's own
caller ID plus a fact only the customer knows, or by a code texted to the number on file
(the rules are in :mod:`..identity`), within per-call limits and per-customer limits
across calls (:mod:`..limits`; a store that cannot count refuses to verify). Their
replies never repeat a fact or a code, and say nothing about the customer until the
caller is verified."""

from __future__ import annotations

import secrets

from dealerline_common.logs import get_logger
from dealerline_common.state import CustomerInfo
from dealerline_common.state_store import StateStoreError

from ..context import ToolContext
from ..effects import ToolEffect
from ..identity import caller_id_matches, check_code, fact_matches, new_code
from ..limits import CODES_LOCKED, FACTS_LOCKED, UNAVAILABLE
from ..notices import code_text
from ..repo import DealershipError
from .args import CheckCodeArgs, NoArgs, VerifyArgs
from .replies import NOT_IDENTIFIED, Result, appointment_line, customer_line, keep_returning

__all__ = ["check_verification_code", "send_verification_code", "verify_identity"]

log = get_logger(__name__)

_OFFER_CODE = "offer to text a code to the number on file (send_verification_code)"


async def _verified_reply(ctx: ToolContext, customer: CustomerInfo, how: str) -> str:
    upcoming = await ctx.repo.upcoming_appointments(customer.id)
    booked = "; ".join(appointment_line(a) for a in upcoming) or "none"
    return f"VERIFIED ({how}): {customer_line(customer)} | upcoming appointments: {booked}"


def _customer(ctx: ToolContext) -> CustomerInfo | str:
    customer = ctx.state.customer
    if customer is None:
        return NOT_IDENTIFIED
    return customer


async def verify_identity(ctx: ToolContext, args: VerifyArgs) -> Result:
    found = _customer(ctx)
    if isinstance(found, str):
        return (found, ToolEffect())
    identity = ctx.state.identity
    if ctx.state.verified:
        return (await _verified_reply(ctx, found, "already"), ToolEffect())
    if identity.fact_failures >= ctx.identity_rules.max_fact_failures:
        return (
            f"LOCKED: too many wrong answers on this call; {_OFFER_CODE}, or a team member.",
            ToolEffect(),
        )
    customer = keep_returning(ctx, await ctx.repo.customer(found.id))
    if not caller_id_matches(ctx.state, customer):
        # The spoken number or name found the record; only the call's own caller ID may
        # pair with a fact (else anyone who read a plate could pass).
        return (
            "NOT_VERIFIED: this call's caller ID is not the number on file, so a fact "
            f"cannot verify it; {_OFFER_CODE}.",
            ToolEffect(),
        )
    try:
        if ctx.limits is not None and await ctx.limits.facts_locked(ctx.session_id, customer.id):
            return (FACTS_LOCKED, ToolEffect())
    except StateStoreError:
        log.exception("verification limits unavailable", session_id=ctx.session_id)
        return (UNAVAILABLE, ToolEffect())
    return await _check_fact(ctx, customer, args.fact)


async def _check_fact(ctx: ToolContext, customer: CustomerInfo, fact: str) -> Result:
    """Judge the fact; a wrong one counts on this call and for the customer."""
    upcoming = await ctx.repo.upcoming_appointments(customer.id)
    try:
        service: str | None = (await ctx.repo.find_service(fact)).name
    except DealershipError:
        service = None
    identity = ctx.state.identity
    if fact_matches(fact, customer, upcoming, service):
        done = identity.model_copy(
            update={"verified_customer_id": customer.id, "method": "caller_id_and_fact"}
        )
        log.info("caller verified", session_id=ctx.session_id, method="caller_id_and_fact")
        reply = await _verified_reply(ctx, customer, "caller ID and fact")
        return (reply, ToolEffect(customer=customer, identity=done))
    failed = identity.model_copy(update={"fact_failures": identity.fact_failures + 1})
    left = ctx.identity_rules.max_fact_failures - failed.fact_failures
    if ctx.limits is not None:
        try:
            left = min(left, await ctx.limits.fact_failed(customer.id, fact))
        except StateStoreError:
            log.exception("verification limits unavailable", session_id=ctx.session_id)
            return (UNAVAILABLE, ToolEffect(identity=failed))
    log.info("verification fact refused", session_id=ctx.session_id, tries_left=left)
    return (
        f"NOT_VERIFIED: that does not match what is on file ({left} tries left). Ask once "
        f"more, or {_OFFER_CODE}.",
        ToolEffect(identity=failed),
    )


async def send_verification_code(ctx: ToolContext, _args: NoArgs) -> Result:
    found = _customer(ctx)
    if isinstance(found, str):
        return (found, ToolEffect())
    identity = ctx.state.identity
    rules = ctx.identity_rules
    if identity.codes_sent >= rules.max_codes_per_call:
        return ("ERROR: no more codes can be sent on this call; offer a team member.", ToolEffect())
    customer = await ctx.repo.customer(found.id)
    if not customer.phone or ctx.publish_notification is None:
        return (
            "ERROR: a code cannot be texted for this customer; ask for the plate, the last 6 "
            "of the VIN or the booked service instead, or offer a team member.",
            ToolEffect(),
        )
    try:
        if ctx.limits is not None and not await ctx.limits.take_code(ctx.session_id, customer.id):
            return (CODES_LOCKED, ToolEffect())
    except StateStoreError:
        log.exception("verification limits unavailable", session_id=ctx.session_id)
        return (UNAVAILABLE, ToolEffect())
    code, pending = new_code(customer.id, ctx.clock().timestamp(), rules)
    job = code_text(
        ctx.session_id,
        secrets.token_hex(8),
        customer.phone,
        code,
        ctx.dealership_name,
        rules.code_ttl_s,
    )
    try:
        await ctx.publish_notification(job)
    except Exception:
        log.exception("verification code not sent", session_id=ctx.session_id)
        return ("ERROR: the code could not be sent right now; offer a team member.", ToolEffect())
    log.info("verification code sent", session_id=ctx.session_id, customer_id=customer.id)
    sent = identity.model_copy(update={"code": pending, "codes_sent": identity.codes_sent + 1})
    minutes = max(1, round(rules.code_ttl_s / 60))
    return (
        f"CODE_SENT: a 6-digit code was texted to the number on file; it works for {minutes} "
        "minutes. Ask the caller to read it out or key it in, then check_verification_code.",
        ToolEffect(identity=sent),
    )


async def check_verification_code(ctx: ToolContext, args: CheckCodeArgs) -> Result:
    found = _customer(ctx)
    if isinstance(found, str):
        return (found, ToolEffect())
    if ctx.state.verified:
        return (await _verified_reply(ctx, found, "already"), ToolEffect())
    outcome, identity = check_code(ctx.state.identity, found.id, args.code, ctx.clock().timestamp())
    log.info("verification code checked", session_id=ctx.session_id, outcome=outcome)
    if outcome == "verified":
        customer = keep_returning(ctx, await ctx.repo.customer(found.id))
        reply = await _verified_reply(ctx, customer, "texted code")
        return (reply, ToolEffect(customer=customer, identity=identity))
    replies = {
        "none": f"ERROR: no code is waiting for this customer; {_OFFER_CODE} first.",
        "expired": "EXPIRED: the code is too old; offer to text a new one.",
        "locked": "LOCKED: too many wrong codes; offer to text a new one, or a team member.",
    }
    left = identity.code.attempts_left if identity.code else 0
    text = replies.get(outcome, f"WRONG_CODE: that code is not right ({left} tries left).")
    changed = identity != ctx.state.identity
    return (text, ToolEffect(identity=identity) if changed else ToolEffect())
