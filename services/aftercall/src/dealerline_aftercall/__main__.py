"""``python -m dealerline_aftercall``: run the aftercall service until SIGTERM."""

from __future__ import annotations

from dealerline_common.service import service_main

from .service import Service
from .settings import AftercallSettings


def main() -> None:
    service_main("aftercall", AftercallSettings, Service)


if __name__ == "__main__":
    main()
