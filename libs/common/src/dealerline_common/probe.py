"""``python -m dealerline_common.probe [/livez]``: the images' health check.

Asks ``http://127.0.0.1:<port><path>`` and exits 0 on a 2xx answer, 1 otherwise. The port
is the one the service listens on: the variable named by ``DEALERLINE_PORT_ENV`` (the
service's own, e.g. ``AGENT_HTTP_PORT``) when it is set, else ``DEALERLINE_HTTP_PORT`` (the
service's default, baked into the image)."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence


def probe_url(env: Mapping[str, str], path: str = "/livez") -> str:
    own = env.get(env.get("DEALERLINE_PORT_ENV", ""), "")
    port = own or env.get("DEALERLINE_HTTP_PORT", "")
    if not port.isdigit():
        raise ValueError(
            "no port: set DEALERLINE_HTTP_PORT (or the variable DEALERLINE_PORT_ENV names)"
        )
    return f"http://127.0.0.1:{port}{path}"


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        url = probe_url(os.environ if env is None else env, args[0] if args else "/livez")
        with urllib.request.urlopen(url, timeout=2) as answer:
            return 0 if 200 <= answer.status < 300 else 1
    except (OSError, ValueError, urllib.error.URLError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
