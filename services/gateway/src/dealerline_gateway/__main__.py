"""``dealerline-gateway``: serve Twilio webhooks and media streams until SIGTERM."""

from __future__ import annotations

from dealerline_common.service import service_main

from .service import GatewayService
from .settings import GatewaySettings


def main() -> None:
    service_main("gateway", GatewaySettings, GatewayService)


if __name__ == "__main__":
    main()
