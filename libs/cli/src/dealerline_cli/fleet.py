"""Start the whole dealerline fleet on this machine: a local nats-server, the scripted LLM
endpoint (unless a real one is configured), and one process per service, each started for
real with ``python -m <package>`` and its own environment.

Used by ``make run`` (:mod:`dealerline_cli.run`), ``make demo``, ``make bench`` and
the end-to-end tests. Every process it starts is stopped again (SIGTERM, then SIGKILL after
a grace period), also when the caller is interrupted. ``replicas`` runs more than one
process of a service (``{"stt": 2}`` starts ``stt`` and ``stt-2``), and :meth:`Fleet.terminate`
/ :meth:`Fleet.wait_exit` let a test drain one of them as Kubernetes would. For fault runs
(``make chaos``) ``own_redis`` gives the fleet a redis-server of its own (append-only, its
files in the log folder) and :meth:`Fleet.restart_nats` / :meth:`Fleet.restart_redis` stop
one and start it again on the same port with the same store, mid-call; :meth:`Fleet.pids`
names every process for samplers.

``make run`` adds what a dealership lives with: ``nats_store_dir`` keeps the JetStream
store across starts, and ``edge_port`` puts the edge (:mod:`dealerline_cli.edge`) in
front, one port for every Twilio webhook and the dashboard, routed as the Ingress does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from dealerline_common.local_nats import NatsServer
from dealerline_common.net import free_port
from dealerline_common.state_store.local_redis import RedisServer

# The human leg's webhooks, served by the escalation service (the edge and the Ingress
# route them there, everything else under /api/voice to the gateway; see deploy/k8s).
from .edge import ESCALATION_WEBHOOK_PATHS

__all__ = [
    "DEFAULT_PUBLIC_URL",
    "ESCALATION_WEBHOOK_PATHS",
    "SERVICES",
    "Fleet",
    "LlmChoice",
    "Proc",
    "ServiceSpec",
    "TwilioAccount",
]

DEFAULT_PUBLIC_URL = "https://dealer.example.com"
# The edge passes on X-Forwarded-For; the dashboard believes it from the edge alone.
_EDGE_ADDRESSES = '["127.0.0.1/32", "::1/128"]'


@dataclass(frozen=True)
class TwilioAccount:
    """The Twilio account the escalation service rings staff through: the real one, or the
    simulator's (``api_base_url`` then points the twilio client at it)."""

    account_sid: str
    auth_token: str
    from_number: str
    api_base_url: str | None = None


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str
    env_prefix: str
    what: str  # shown while waiting for it to become ready


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("gateway", "dealerline_gateway", "GATEWAY_", "webhooks and media stream"),
    ServiceSpec("stt", "dealerline_stt", "STT_", "loading faster-whisper"),
    ServiceSpec("tts", "dealerline_tts", "TTS_", "loading Kokoro-82M"),
    ServiceSpec("agent", "dealerline_agent", "AGENT_", "LangGraph agent"),
    ServiceSpec("escalation", "dealerline_escalation", "ESCALATION_", "human leg"),
    ServiceSpec("dashboard-api", "dealerline_dashboard", "DASHBOARD_", "dashboard API"),
    ServiceSpec("aftercall", "dealerline_aftercall", "AFTERCALL_", "call records and notices"),
)


@dataclass
class LlmChoice:
    """Which LLM the agent talks to: a real OpenAI-compatible endpoint, or the scripted one."""

    base_url: str | None
    api_key: str | None
    model: str
    scripted: bool
    # The scripted LLM only: word each turn's reply in a random variant (``--vary``), so a
    # reply generated twice shows (make chaos). Passed to that process alone.
    vary: bool = False

    @classmethod
    def from_env(cls) -> LlmChoice:
        base = os.environ.get("AGENT_LLM_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
        key = os.environ.get("AGENT_LLM_API_KEY") or os.environ.get("OPENAI_API_KEY")
        model = os.environ.get("AGENT_LLM_MODEL", "gpt-4.1-mini")
        if base or key:
            return cls(base_url=base, api_key=key, model=model, scripted=False)
        return cls(base_url=None, api_key=None, model="scripted", scripted=True)

    def describe(self) -> str:
        if self.scripted:
            return "scripted OpenAI-compatible endpoint (no API key or LLM base URL set)"
        return f"model {self.model} at {self.base_url or 'https://api.openai.com/v1'}"


@dataclass
class Proc:
    spec_name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Fleet:
    """The fleet's processes. ``async with Fleet(...) as fleet:`` starts and stops it."""

    nats_url: str | None = None
    public_url: str = DEFAULT_PUBLIC_URL
    auth_token: str = field(default_factory=lambda: secrets.token_hex(16))
    # Signs the dashboard's staff tokens (DASHBOARD_AUTH_SECRET); one per fleet.
    dashboard_secret: str = field(default_factory=lambda: secrets.token_hex(32))
    scenario: Path | None = None
    llm: LlmChoice = field(default_factory=LlmChoice.from_env)
    log_dir: Path | None = None
    services: tuple[ServiceSpec, ...] = SERVICES
    extra_env: dict[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 300.0  # TTS speaks its pre-warmed phrases before it is ready
    quiet: bool = False
    ports: dict[str, int] = field(default_factory=dict)  # fixed ports; others are free ones
    replicas: dict[str, int] = field(default_factory=dict)  # processes per service (default 1)
    procs: dict[str, Proc] = field(default_factory=dict)
    specs: dict[str, ServiceSpec] = field(default_factory=dict)  # by process name
    nats: NatsServer | None = None
    llm_base_url: str | None = None
    # The dealership database: None = a fresh SQLite file in log_dir, migrated and seeded
    # with the demo dealership. The state store: None = the local Redis when one answers
    # (under a namespace of this fleet's own), else the in-memory store.
    database_url: str | None = None
    state_url: str | None = None
    state_namespace: str = field(default_factory=lambda: f"dl-fleet-{secrets.token_hex(4)}:")
    # Twilio for the human leg. None: the escalation service starts without it and every
    # escalation fails at once (the agent then offers a callback).
    twilio: TwilioAccount | None = None
    # The env file its services read (DEALERLINE_ENV_FILE): none by default, so an
    # operator's .env in the working directory never reaches a demo, test or bench fleet
    # (it could hold a real Twilio account). None: they read .env as configured (make run).
    env_file: str | None = os.devnull
    # A redis-server of the fleet's own on a free port (never the system one), restartable.
    own_redis: bool = False
    redis: RedisServer | None = None
    # The local nats-server's JetStream store: None = a temporary folder, removed at stop.
    nats_store_dir: Path | None = None
    # The edge on this port (0: a free one) on ``edge_host``, started once the services
    # are ready; None: no edge (every service is reached on its own port).
    edge_port: int | None = None
    edge_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if self.twilio is not None:
            # One account: the customer's webhooks are signed with the same token.
            self.auth_token = self.twilio.auth_token

    def _say(self, text: str) -> None:
        if not self.quiet:
            print(f"[fleet] {text}", file=sys.stderr, flush=True)

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.procs['gateway'].port}"

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.procs[name].port}"

    @property
    def edge_url(self) -> str:
        """The edge, where Twilio (through a tunnel) and the dashboard's users come in."""
        host = "127.0.0.1" if self.edge_host in ("0.0.0.0", "::", "") else self.edge_host
        return f"http://{host}:{self.procs['edge'].port}"

    async def __aenter__(self) -> Fleet:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self.log_dir is None:
            self.log_dir = Path(tempfile.mkdtemp(prefix="dl-fleet-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.nats_url is None:
            store = self.nats_store_dir
            if store is not None:
                store.mkdir(parents=True, exist_ok=True)
            self.nats = NatsServer(store_dir=str(store) if store else None).start()
            self.nats_url = self.nats.url
            self._say(f"nats-server with JetStream on {self.nats_url}")
        if self.llm.scripted:
            port = free_port()
            # A path, or the name of a scenario the simulator ships (its process resolves it).
            scenario = self.scenario or "demo"
            self._spawn(
                "llm",
                [sys.executable, "-m", "dealerline_sim.llm", "--scenario", str(scenario)]
                + ["--port", str(port)]
                + (["--vary"] if self.llm.vary else []),
                port,
                {},
            )
            self.llm_base_url = f"http://127.0.0.1:{port}/v1"
            await self._wait_http("llm", f"{self.llm_base_url}/models", "scripted LLM")
        else:
            self.llm_base_url = self.llm.base_url
        self._say(f"LLM: {self.llm.describe()}")
        await self._prepare_stores()
        for spec in self.services:
            for name in self.instances(spec):
                port = self.ports.get(name) or free_port()
                self.specs[name] = spec
                self._spawn(
                    name, [sys.executable, "-m", spec.module], port, self._env_for(spec, port)
                )
        await asyncio.gather(
            *(
                self._wait_http(name, f"{self.url(name)}/readyz", spec.what)
                for name, spec in self.specs.items()
            )
        )
        if self.edge_port is not None:
            await self._start_edge()
        self._say("fleet ready: " + ", ".join(f"{n} :{p.port}" for n, p in self.procs.items()))

    async def _start_edge(self) -> None:
        missing = [n for n in ("gateway", "escalation", "dashboard-api") if n not in self.procs]
        if missing:
            raise ValueError(f"the edge routes to {', '.join(missing)}, which this fleet lacks")
        port = self.edge_port or free_port()
        argv = [sys.executable, "-m", "dealerline_cli.edge", "--host", self.edge_host]
        argv += ["--port", str(port), "--gateway", self.url("gateway")]
        argv += ["--escalation", self.url("escalation")]
        argv += ["--dashboard", self.url("dashboard-api")]
        self._spawn("edge", argv, port, {})
        await self._wait_http("edge", f"{self.edge_url}/livez", "one public port")

    async def _prepare_stores(self) -> None:
        from dealerline_common.db.engine import display_url
        from dealerline_common.db.migrate import upgrade
        from dealerline_common.db.seed import seed

        if self.database_url is None:
            assert self.log_dir is not None
            path = self.log_dir / "dealership.db"
            # Fresh every time: a log folder reused from an earlier run keeps its database,
            # whose calls and bookings are not this fleet's.
            for stale in (
                path,
                path.with_name(path.name + "-wal"),
                path.with_name(path.name + "-shm"),
            ):
                stale.unlink(missing_ok=True)
            self.database_url = f"sqlite+aiosqlite:///{path}"
            await upgrade(self.database_url)
            await seed(self.database_url)
            self._say(f"dealership database {display_url(self.database_url)}: migrated, seeded")
        if self.state_url is None and self.own_redis:
            assert self.log_dir is not None
            redis_dir = self.log_dir / "redis"
            shutil.rmtree(redis_dir, ignore_errors=True)  # an earlier run's data is not ours
            self.redis = await asyncio.to_thread(RedisServer(dir=redis_dir).start)
            self.state_url = self.redis.url
        if self.state_url is None:
            self.state_url = await _local_redis() or "memory://"
        self._say(f"conversation state: {self.state_url} (namespace {self.state_namespace})")

    def twilio_routes(self) -> dict[str, str]:
        """Public URL prefix → local base URL for everything Twilio requests: the human
        leg's webhooks go to the escalation service, the rest to the gateway (what the
        ingress does in production). Give them to the simulator's ``add_route``."""
        if "edge" in self.procs:
            return {self.public_url: self.edge_url}
        routes = {self.public_url: self.gateway_url}
        if "escalation" in self.procs:
            for path in ESCALATION_WEBHOOK_PATHS:
                routes[self.public_url + path] = self.url("escalation") + path
        return routes

    def instances(self, spec: ServiceSpec) -> list[str]:
        """Process names of a service: ``stt``, then ``stt-2``, ``stt-3`` ... for replicas."""
        count = max(1, self.replicas.get(spec.name, 1))
        return [spec.name] + [f"{spec.name}-{i}" for i in range(2, count + 1)]

    def _env_for(self, spec: ServiceSpec, port: int) -> dict[str, str]:
        p = spec.env_prefix
        env = {
            f"{p}NATS_URL": str(self.nats_url),
            f"{p}HTTP_PORT": str(port),
            f"{p}HTTP_HOST": "127.0.0.1",
        }
        if spec.name == "gateway":
            env["GATEWAY_PUBLIC_URL"] = self.public_url
            env["GATEWAY_TWILIO_AUTH_TOKEN"] = self.auth_token
            env["GATEWAY_ESCALATION_PUBLIC_URL"] = self.public_url
        if spec.name == "escalation":
            env["ESCALATION_PUBLIC_URL"] = self.public_url
            env["ESCALATION_GATEWAY_PUBLIC_URL"] = self.public_url
            if self.twilio is not None:
                env["ESCALATION_TWILIO_ACCOUNT_SID"] = self.twilio.account_sid
                env["ESCALATION_TWILIO_AUTH_TOKEN"] = self.twilio.auth_token
                env["ESCALATION_FROM_NUMBER"] = self.twilio.from_number
                if self.twilio.api_base_url:
                    env["ESCALATION_TWILIO_API_BASE_URL"] = self.twilio.api_base_url
        if spec.name == "agent":
            if self.llm_base_url:
                env["AGENT_LLM_BASE_URL"] = self.llm_base_url
            env["AGENT_LLM_MODEL"] = self.llm.model
            env["AGENT_LLM_API_KEY"] = self.llm.api_key or "scripted-endpoint-needs-no-key"
        if spec.name == "aftercall":
            if self.llm_base_url:
                env["AFTERCALL_LLM_BASE_URL"] = self.llm_base_url
            env["AFTERCALL_LLM_MODEL"] = self.llm.model
            env["AFTERCALL_LLM_API_KEY"] = self.llm.api_key or "scripted-endpoint-needs-no-key"
            if "dashboard-api" in self.procs:
                env["AFTERCALL_DASHBOARD_URL"] = self.url("dashboard-api")
            if self.twilio is not None:
                env["AFTERCALL_TWILIO_ACCOUNT_SID"] = self.twilio.account_sid
                env["AFTERCALL_TWILIO_AUTH_TOKEN"] = self.twilio.auth_token
                env["AFTERCALL_TWILIO_FROM_NUMBER"] = self.twilio.from_number
                if self.twilio.api_base_url:
                    env["AFTERCALL_TWILIO_API_BASE_URL"] = self.twilio.api_base_url
        if spec.name == "dashboard-api":
            env["DASHBOARD_AUTH_SECRET"] = self.dashboard_secret
            if self.edge_port is not None:
                env["DASHBOARD_TRUSTED_PROXIES"] = _EDGE_ADDRESSES
        if spec.name in ("agent", "escalation", "dashboard-api", "aftercall"):
            env[f"{p}DATABASE_URL"] = self.database_url or ""
            env[f"{p}STATE_URL"] = self.state_url or ""
            env[f"{p}STATE_NAMESPACE"] = self.state_namespace
        if self.env_file is not None:
            env["DEALERLINE_ENV_FILE"] = self.env_file
        env.update(self.extra_env)
        return env

    def _spawn(self, name: str, argv: list[str], port: int, env: dict[str, str]) -> None:
        assert self.log_dir is not None
        log_path = self.log_dir / f"{name}.log"
        log = log_path.open("ab")
        process = subprocess.Popen(
            argv,
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop them
        )
        log.close()
        self.procs[name] = Proc(name, port, process, log_path)

    async def _wait_http(self, name: str, url: str, what: str) -> None:
        proc = self.procs[name]
        started = time.monotonic()
        next_note = started + 5.0
        self._say(f"starting {name} ({what}) ...")
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if proc.process.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {proc.process.returncode} while starting; "
                        f"log {proc.log_path}:\n{proc.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url)).status_code == 200:
                        self._say(f"{name} ready after {time.monotonic() - started:.1f}s")
                        return
                now = time.monotonic()
                if now - started > self.ready_timeout_s:
                    raise RuntimeError(
                        f"{name} not ready after {self.ready_timeout_s:.0f}s; log:\n{proc.log_tail()}"
                    )
                if now > next_note:
                    self._say(f"still waiting for {name} ({what}), {now - started:.0f}s")
                    next_note = now + 5.0
                await asyncio.sleep(0.1)

    async def restart(self, name: str) -> None:
        """Kill one service process hard (as a crash would) and start it again."""
        spec = self.specs[name]
        self.kill(name)
        port = self.procs[name].port
        self._spawn(name, [sys.executable, "-m", spec.module], port, self._env_for(spec, port))
        await self._wait_http(name, f"{self.url(name)}/readyz", spec.what)

    async def restart_nats(self, down_s: float) -> None:
        """Stop the fleet's nats-server, leave it down ``down_s`` seconds, start it again
        on the same port with the same JetStream store (streams and consumers survive)."""
        assert self.nats is not None, "restart_nats needs the fleet's own nats-server"
        await asyncio.to_thread(self.nats.stop)
        await asyncio.sleep(down_s)
        await asyncio.to_thread(self.nats.start)

    async def restart_redis(self, down_s: float) -> None:
        """The same for the fleet's own redis-server (``own_redis``): its append-only file
        brings the state back."""
        assert self.redis is not None, "restart_redis needs Fleet(own_redis=True)"
        await asyncio.to_thread(self.redis.stop)
        await asyncio.sleep(down_s)
        await asyncio.to_thread(self.redis.start)

    def pids(self) -> dict[str, int]:
        """Process name → pid of everything of the fleet that runs now (nats, redis too)."""
        found = {n: p.process.pid for n, p in self.procs.items() if p.process.poll() is None}
        for name, server in (("nats", self.nats), ("redis", self.redis)):
            proc = server.proc if server is not None else None
            if proc is not None and proc.poll() is None:
                found[name] = proc.pid
        return found

    def kill(self, name: str) -> None:
        proc = self.procs[name].process
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    def terminate(self, name: str) -> None:
        """Send SIGTERM to one process, as Kubernetes does to a pod it stops: it drains."""
        proc = self.procs[name].process
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    async def wait_exit(self, name: str, timeout_s: float) -> int | None:
        """The process's exit status once it ends, or None if it still runs after
        ``timeout_s`` (it is left running)."""
        proc = self.procs[name].process
        try:
            return await asyncio.to_thread(proc.wait, timeout_s)
        except subprocess.TimeoutExpired:
            return None

    async def stop(self, grace_s: float = 20.0) -> None:
        running = [p for p in self.procs.values() if p.process.poll() is None]
        for p in running:
            with contextlib.suppress(ProcessLookupError):
                p.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for p in running:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                await asyncio.to_thread(p.process.wait, remaining)
            except subprocess.TimeoutExpired:
                self._say(f"{p.spec_name} did not stop in {grace_s:.0f}s; killing it")
                p.process.kill()
                await asyncio.to_thread(p.process.wait)
        if self.nats is not None:
            self.nats.cleanup()
            self.nats = None
        if self.redis is not None:
            await asyncio.to_thread(self.redis.stop)
            self.redis = None
        if running:
            self._say("fleet stopped")


async def _local_redis(url: str = "redis://127.0.0.1:6379/0") -> str | None:
    """``url`` if a Redis answers there within a second, else None."""
    url = os.environ.get("REDIS_URL") or url
    try:
        import redis.asyncio as aioredis

        client = aioredis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
        try:
            await client.ping()
        finally:
            await client.aclose()
    except Exception:
        return None
    return url
