"""A real ``redis-server`` of one's own on this machine, for tests and benches that stop and
restart Redis (never the system one on 6379): a free port, append-only persistence in a
folder, so what was written survives a restart on the same port. It lives in libs/common,
beside :mod:`dealerline_common.local_nats`, so every package's tests can start one without
importing the simulator."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from ..net import free_port

__all__ = ["RedisServer", "redis_server_binary"]


def redis_server_binary() -> str:
    found = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(found).exists():
        raise RuntimeError("redis-server not found: install it (apt-get install redis-server)")
    return found


class RedisServer:
    """``redis-server --appendonly yes`` on a free port, its files in ``dir`` (a temporary
    folder, removed by :meth:`cleanup`, unless given). :meth:`stop` is a SIGTERM: Redis
    shuts down cleanly and flushes its append-only file, as on a pod's rescheduling."""

    def __init__(
        self, port: int | None = None, dir: str | Path | None = None, fsync: str = "everysec"
    ) -> None:
        self.port = port or free_port()
        self._own_dir = dir is None
        self.dir = Path(dir) if dir is not None else Path(tempfile.mkdtemp(prefix="dl-redis-"))
        self.fsync = fsync
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        argv = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", self.fsync]
        argv += ["--save", ""]
        with (self.dir / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not listen on {self.port} in {timeout_s} s")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
