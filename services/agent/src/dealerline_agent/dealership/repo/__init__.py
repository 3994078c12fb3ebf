"""The dealership repository: every read and write the agent's tools make.

All operations are async and open their own short session, so one :class:`Dealership`
is shared by every call the agent handles. Errors the caller can do something about are
:class:`DealershipError` subclasses whose message is safe to read to the LLM (it never
names another customer or their details).

The parts, one area each: ``store`` (sessions, clock), ``hours`` (profile, opening hours,
holidays), ``catalog`` (services), ``customers`` and ``vehicles``, ``scheduling`` (the
rules for free times), ``appointments`` (book, reschedule, cancel), ``faq_and_staff``,
``callbacks``; ``cleaning`` checks what callers give, ``errors`` holds the refusals, and
``facade`` puts them together as :class:`Dealership`.
"""

from .errors import (
    Conflict,
    DealershipError,
    InvalidInput,
    NotAllowed,
    NotFound,
    SlotUnavailable,
)
from .facade import Dealership
from .store import utc_now

__all__ = [
    "Conflict",
    "Dealership",
    "DealershipError",
    "InvalidInput",
    "NotAllowed",
    "NotFound",
    "SlotUnavailable",
    "utc_now",
]
