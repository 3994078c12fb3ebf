"""``<Dial><Conference>`` on a leg: joining the room, staying in it, and the Dial's action.

A scripted human waits up to ``max_wait_for_conference_s`` for the conference to start
(else hangs up), then talks for ``talk_s`` (or until it is taken out of the room) and hangs
up; a leg without a script (the customer's) stays until it leaves the room. Leaving the
room, unless the leg is over, requests the Dial's ``action`` (``DialCallStatus=completed``
and ``DialCallDuration``) or goes on with the next verb. Only ``<Conference>`` is dialled.
"""

from __future__ import annotations

import asyncio

from dealerline_sim.conference import Participant
from dealerline_sim.leg_context import END, End, RunningLeg, Step
from dealerline_sim.leg_webhooks import fetch, resolve
from dealerline_sim.twiml import TwimlVerb

__all__ = ["dial"]


async def _first_of(events: dict[str, asyncio.Event], within_s: float | None) -> str | None:
    """The name of the first event set (checked in order); None after ``within_s`` (wall)."""
    for name, event in events.items():
        if event.is_set():
            return name
    waiters = {
        name: asyncio.create_task(event.wait(), name=f"leg-wait-{name}")
        for name, event in events.items()
    }
    try:
        await asyncio.wait(waiters.values(), timeout=within_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waiters.values():
            task.cancel()
        await asyncio.gather(*waiters.values(), return_exceptions=True)
    for name, event in events.items():
        if event.is_set():
            return name
    return None


async def dial(leg: RunningLeg, verb: TwimlVerb, doc_url: str | None) -> Step:
    nouns = [c for c in verb.children if c.tag == "Conference"]
    action_attr = verb.attr("action")
    method = (verb.attr("method") or "POST").upper()
    action = resolve(doc_url, action_attr) if action_attr else None
    if not nouns:
        leg.ctx.error(leg.sid, 13201, "the simulator dials only <Conference>")
        if action:
            return await fetch(leg, action, method, "dial-action", {"DialCallStatus": "failed"})
        return None
    noun = nouns[0]
    if noun.attrs.get("statusCallback"):  # relative to the document, like every URL
        attrs = dict(noun.attrs)
        attrs["statusCallback"] = resolve(doc_url, attrs["statusCallback"])
        noun = TwimlVerb(noun.tag, attrs, noun.text, noun.children)
    leg.dial_action = (action, method) if action else None
    p = leg.ctx.conferences.join(leg.sid, noun, label=None)
    leg.participant = p
    if leg.customer is not None:
        leg.customer.in_conference = noun.text
    joined = leg.ctx.clock.now_s()
    step = await _stay_in_conference(leg, p)
    if isinstance(step, End):
        return step
    leg.participant = None
    leg.dial_action = None
    if leg.customer is not None:
        leg.customer.in_conference = None
    if action:
        return await fetch(
            leg,
            action,
            method,
            "dial-action",
            {
                "DialCallStatus": "completed",
                "DialCallDuration": str(int(round(leg.ctx.clock.now_s() - joined))),
            },
        )
    return None


async def _stay_in_conference(leg: RunningLeg, p: Participant) -> Step:
    conf = leg.ctx.conferences.by_sid[p.conference_sid]
    clock = leg.ctx.clock
    script = leg.human
    if script is None:
        await p.left.wait()
        return None
    if not conf.started.is_set():
        which = await _first_of(
            {"left": p.left, "started": conf.started},
            clock.wall(script.max_wait_for_conference_s),
        )
        if which is None:
            await leg.hang_up_from_twiml("human")
            return END
        if which == "left":
            return None
    if script.talk_s is None:
        await p.left.wait()
        return None
    which = await _first_of({"left": p.left}, clock.wall(script.talk_s))
    if which == "left":
        return None
    await leg.hang_up_from_twiml("human")
    return END
