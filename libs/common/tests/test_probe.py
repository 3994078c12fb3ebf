"""The images' health check (`python -m dealerline_common.probe`) against a real HTTP server."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dealerline_common.net import free_port
from dealerline_common.probe import main, probe_url


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/livez" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_the_services_own_port_variable_wins_over_the_baked_default() -> None:
    env = {"DEALERLINE_PORT_ENV": "AGENT_HTTP_PORT", "DEALERLINE_HTTP_PORT": "8084"}
    assert probe_url(env) == "http://127.0.0.1:8084/livez"
    assert (
        probe_url({**env, "AGENT_HTTP_PORT": "9000"}, "/readyz") == "http://127.0.0.1:9000/readyz"
    )
    with pytest.raises(ValueError, match="no port"):
        probe_url({})


def test_healthy_unhealthy_and_nobody_listening(port: int) -> None:
    env = {"DEALERLINE_PORT_ENV": "X_HTTP_PORT", "X_HTTP_PORT": str(port)}
    assert main(["/livez"], env) == 0
    assert main(["/readyz"], env) == 1  # 503
    assert main(["/livez"], {"DEALERLINE_HTTP_PORT": str(free_port())}) == 1


def test_as_the_image_runs_it(port: int) -> None:
    env = {"DEALERLINE_HTTP_PORT": str(port), "PATH": "/usr/bin:/bin"}
    ok = subprocess.run([sys.executable, "-m", "dealerline_common.probe", "/livez"], env=env)
    assert ok.returncode == 0
    env["DEALERLINE_HTTP_PORT"] = str(free_port())
    bad = subprocess.run(
        [sys.executable, "-m", "dealerline_common.probe"], env=env, capture_output=True, text=True
    )
    assert bad.returncode == 1 and "unhealthy" in bad.stderr
