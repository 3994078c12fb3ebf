"""Taking over a reply that an earlier delivery of the turn started and did not finish.

Every sentence of a reply is noted in the state store before it is published
(:class:`.speaker.TurnVoice`). When a turn is delivered again (its agent died) and its
reply is not in the history yet but has noted sentences, the new owner:

1. counts the noted sentences as said and publishes them again under their own message
   ids (the ``say`` stream drops those it has; one noted but never published reaches the
   caller now);
2. asks the model to continue the reply from exactly where it stopped: the turn's input
   gets a system note (:func:`continuation_note`) carrying the words already said;
3. speaks the continuation with sequence numbers following the noted ones, and commits
   the reply the caller heard: the noted words, then the continuation
   (:func:`keep_said`).

Tools the first owner ran are not in the history (the turn was never committed): the
model may call them again. Reading tools answer alike, and most tools that change data
are keyed so a second run finds what the first did: a booking by customer, service, time
and car; a callback request by session and turn; a customer notice by turn; cancelling a
cancelled appointment changes nothing. Not keyed yet: ``escalate`` (a fresh task id, so a
second ring) and ``send_verification_code`` (a second code is texted; the later one
counts).
"""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.messages import AIMessage, SystemMessage

from dealerline_common.conversation import ai_message_id, is_turn_ai_id

from .history import text_of
from .turn_record import TurnRecord

__all__ = ["CONTINUE_MARK", "continuation_note", "keep_said", "resume_note_id"]

CONTINUE_MARK = "CONTINUE YOUR REPLY"
"""How a continuation request begins (the scripted LLM in ``dealerline_sim`` reads it)."""


def resume_note_id(turn_id: str) -> str:
    return f"{turn_id}:resume"


def continuation_note(turn_id: str, said: Sequence[str]) -> SystemMessage:
    """The system note that asks the model to go on with a reply after ``said``."""
    words = " ".join(s.strip() for s in said if s.strip())
    return SystemMessage(
        content=(
            f"{CONTINUE_MARK}: a system fault interrupted your reply to the caller's last "
            "words. The caller has already heard you say:\n"
            f"<<<\n{words}\n>>>\n"
            "Continue that reply from exactly where it stopped. Do not repeat or rephrase "
            "those words; say only what comes next, and nothing if the reply was complete. "
            "Call a tool only if what is left to say needs its answer."
        ),
        id=resume_note_id(turn_id),
    )


def keep_said(record: TurnRecord, said: Sequence[str]) -> None:
    """Make the turn's reply in ``record`` begin with the sentences ``said`` before it was
    taken over: they go to the turn's first assistant message (words said before any tool
    call live there), or make one if the continuation said and did nothing."""
    words = " ".join(s.strip() for s in said if s.strip())
    if not words:
        return
    turn_id = record.turn_id
    steps = [
        m for m in record.messages() if isinstance(m, AIMessage) and is_turn_ai_id(m.id, turn_id)
    ]
    if not steps:
        record.add([AIMessage(content=words, id=ai_message_id(turn_id))])
        return
    first = steps[0]
    rest = text_of(first).strip()
    record.add([first.model_copy(update={"content": f"{words} {rest}".strip()})])
