"""``python -m dealerline_dashboard``: run the dashboard-api service until SIGTERM."""

from __future__ import annotations

from dealerline_common.service import service_main

from .app import Service
from .settings import DashboardSettings


def main() -> None:
    service_main("dashboard-api", DashboardSettings, Service)


if __name__ == "__main__":
    main()
