"""``dealerline-stt`` / ``python -m dealerline_stt``: run one STT worker until SIGTERM."""

from __future__ import annotations

from dealerline_common.service import service_main

from .service import SttService
from .settings import SttSettings


def main() -> None:
    service_main("stt", SttSettings, SttService)


if __name__ == "__main__":
    main()
