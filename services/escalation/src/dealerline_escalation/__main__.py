"""``python -m dealerline_escalation``: run the escalation service until SIGTERM."""

from __future__ import annotations

from dealerline_common.service import service_main

from .service import Service
from .settings import EscalationSettings


def main() -> None:
    service_main("escalation", EscalationSettings, Service)


if __name__ == "__main__":
    main()
