"""The record keeper: one durable call record per call, with its LLM summary, and the
service desk's email for the calls it must act on (see :mod:`.keeper`)."""

from .facts import DESK_OUTCOMES, CallFacts, decide_outcome, end_reason
from .keeper import DURABLE, RecordKeeper, desk_email_key
from .summary import Summarizer

__all__ = [
    "DESK_OUTCOMES",
    "DURABLE",
    "CallFacts",
    "RecordKeeper",
    "Summarizer",
    "decide_outcome",
    "desk_email_key",
    "end_reason",
]
