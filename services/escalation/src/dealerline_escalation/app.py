"""The escalation service process.

In this release the service joins the bus and answers health and metrics; its own work
arrives in later releases (see the project issues).
"""

from __future__ import annotations

from dealerline_common.service import BusService

from .settings import EscalationSettings


class Service(BusService):
    name = "escalation"

    def __init__(self, settings: EscalationSettings) -> None:
        super().__init__(settings)
