"""The aftercall service process: the record keeper and the notifier on one bus
connection (see the package's parts)."""

from __future__ import annotations

from dealerline_common.metrics import Metrics
from dealerline_common.ops import Health
from dealerline_common.service import BusService

from .settings import AftercallSettings


class Service(BusService):
    name = "aftercall"

    def __init__(
        self,
        settings: AftercallSettings,
        *,
        metrics: Metrics | None = None,
        health: Health | None = None,
    ) -> None:
        super().__init__(settings, metrics=metrics, health=health)
        self.ac_settings = settings
