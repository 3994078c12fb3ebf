"""``make chaos``: faults through the whole fleet while calls go on.

A fleet (the scripted LLM in vary mode, so a reply generated again is worded differently;
a redis-server of the fleet's own) takes a few concurrent simulated calls, calls ending and
starting all the time, while a fault loop

- SIGKILLs a random worker process (stt, tts, agent, escalation, aftercall; never the
  gateway) at a random point of a turn: just after an utterance (stt), a transcript
  (agent) or a sentence (tts) of some call is seen on the bus, and starts it again at once
  as Kubernetes would;
- stops NATS, leaves it down a few seconds and starts it on the same port and JetStream
  store, while a caller is speaking;
- does the same to Redis.

A process that exits by itself (not by our kill) is a crash: it is counted, its log tail
kept, and it is started again so the run goes on. The tally (:mod:`dealerline_sim.chaos_tally`)
counts lost, duplicated and mixed replies and the time from a kill to the turns it hit
completing; :func:`report_markdown` writes it down.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dealerline_cli.fleet import Fleet, LlmChoice
from dealerline_sim.chaos_callers import ChaosCallers
from dealerline_sim.chaos_tally import (
    KillRecord,
    Tally,
    committed_replies,
    settle,
    tally_bus,
    tally_lines,
)
from dealerline_sim.chaos_watch import BusWatch
from dealerline_sim.phone import PhoneSimulator

# Which bus message marks "a turn is on this worker now", and how often each is picked.
TRIGGER = {"stt": "utterance", "agent": "transcript", "tts": "say"}
WEIGHTS = {"stt": 3, "tts": 3, "agent": 3, "escalation": 1, "aftercall": 1}
STAGE = {"stt": "stt", "agent": "agent", "tts": "tts"}


@dataclass
class ChaosConfig:
    kills: int = 50
    # The services to kill, in this order (one kill each); None: ``kills`` random ones.
    kill_plan: tuple[str, ...] | None = None
    nats_restarts: int = 5
    redis_restarts: int = 5
    calls: int = 3  # concurrent callers
    lines_per_call: int = 3
    nats_down_s: float = 3.0
    redis_down_s: float = 3.0
    gap_s: tuple[float, float] = (2.0, 5.0)  # between two faults
    trigger_delay_s: tuple[float, float] = (0.0, 0.4)  # from the bus message to the kill
    replicas: int = 2  # of stt, tts and agent (one stays up while the other restarts)
    # A caller who hears no complete reply this long after speaking gives up on the turn
    # (it counts as lost) and goes on with its next line; long, so that a lost turn is one
    # that never came, and slowness shows in the turn times instead.
    patience_s: float = 90.0
    pace: float = 1.0
    seed: int | None = None
    log_dir: Path = Path("artifacts") / "chaos" / "logs"
    extra_env: dict[str, str] = field(default_factory=dict)
    progress: Callable[[str], None] = field(default=lambda line: None)


@dataclass
class ChaosResult:
    config: ChaosConfig
    kills: list[KillRecord] = field(default_factory=list)
    nats_restarts: int = 0
    redis_restarts: int = 0
    crashes: list[str] = field(default_factory=list)  # "<process>: <log tail>"
    tally: Tally = field(default_factory=Tally)
    calls: int = 0
    greetings_missing: int = 0
    waited_out: int = 0
    caller_errors: list[str] = field(default_factory=list)
    turn_times_s: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def kills_per_service(self) -> Counter[str]:
        return Counter(k.service for k in self.kills)


class _Chaos:
    def __init__(self, config: ChaosConfig, fleet: Fleet, watch: BusWatch) -> None:
        self.config = config
        self.fleet = fleet
        self.watch = watch
        self.rng = random.Random(config.seed)
        self.result = ChaosResult(config)
        self.expected_down: set[str] = set()  # processes we killed and are restarting
        self._waiters: list[tuple[str, asyncio.Future[str]]] = []
        self._last_note = ""
        self._tasks: set[asyncio.Task[None]] = set()
        watch.on_message(self._seen)

    def _seen(self, kind: str, session_id: str) -> None:
        for entry in list(self._waiters):
            want, future = entry
            if want == kind and not future.done():
                future.set_result(session_id)
                self._waiters.remove(entry)

    async def _after(self, kind: str, timeout_s: float = 30.0) -> str:
        """Wait for the next bus message of ``kind``; "timer" if none comes."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.append((kind, future))
        try:
            await asyncio.wait_for(future, timeout_s)
            return kind
        except TimeoutError:
            return "timer"

    async def faults(self) -> None:
        c = self.config
        services = list(WEIGHTS)
        victims = list(c.kill_plan or ())
        if c.kill_plan is None:
            victims = self.rng.choices(services, [WEIGHTS[s] for s in services], k=c.kills)
        plan = [None] * len(victims) + ["nats"] * c.nats_restarts + ["redis"] * c.redis_restarts
        self.rng.shuffle(plan)
        for i, fault in enumerate(plan, 1):
            await asyncio.sleep(self.rng.uniform(*c.gap_s))
            if fault is None:
                await self.kill_one(victims.pop(0))
            else:
                await self.restart_server(fault)
            self.config.progress(f"fault {i}/{len(plan)}: {self._last_note}")

    async def kill_one(self, service: str) -> None:
        spec = self.fleet.specs[service]  # the first process of a service bears its name
        names = [n for n in self.fleet.instances(spec) if n not in self.expected_down]
        if not names:
            self._last_note = f"{service}: every replica is restarting, skipped"
            return
        trigger = "timer"
        if service in TRIGGER:
            trigger = await self._after(TRIGGER[service])
            await asyncio.sleep(self.rng.uniform(*self.config.trigger_delay_s))
        name = self.rng.choice(names)
        stage = STAGE.get(service)
        affected = [t.utterance_id for t in self.watch.in_flight(stage)] if stage else []
        self.expected_down.add(name)
        self.fleet.kill(name)  # SIGKILL, waited for
        kill = KillRecord(service, name, time.monotonic(), trigger, affected)
        self.result.kills.append(kill)
        self._last_note = f"killed {name} after {trigger}, {len(affected)} turn(s) in flight"
        self._spawn_respawn(name)

    def _spawn_respawn(self, name: str) -> None:
        task = asyncio.get_running_loop().create_task(self._respawn(name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _respawn(self, name: str) -> None:
        try:
            await self.fleet.restart(name)  # the dead process is started again
        except RuntimeError as exc:  # it did not come up: as bad as a crash
            self.result.crashes.append(f"{name} did not restart: {exc}")
        finally:
            self.expected_down.discard(name)

    async def restarted(self) -> None:
        """Wait until every process we are restarting is back."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def restart_server(self, which: str) -> None:
        await self._after("utterance")  # a caller is speaking: mid-call
        if which == "nats":
            await self.fleet.restart_nats(self.config.nats_down_s)
            self.result.nats_restarts += 1
        else:
            await self.fleet.restart_redis(self.config.redis_down_s)
            self.result.redis_restarts += 1
        self._last_note = f"{which} restarted"

    async def watch_crashes(self, stop: asyncio.Event) -> None:
        """Count (and restart) any process that exits without our kill."""
        while not stop.is_set():
            for name, proc in list(self.fleet.procs.items()):
                if name in self.expected_down or name == "llm":
                    continue
                code = proc.process.poll()
                if code is not None:
                    self.result.crashes.append(f"{name} (exit {code}):\n{proc.log_tail(15)}")
                    self.config.progress(f"CRASH: {name} exited with {code}")
                    self.expected_down.add(name)
                    self._spawn_respawn(name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)


def _fleet(config: ChaosConfig) -> Fleet:
    # The scripted LLM rewords a re-run reply (only its own process: the caller's
    # environment is left alone, so nothing else that runs here later varies).
    scripted = LlmChoice(base_url=None, api_key=None, model="scripted", scripted=True, vary=True)
    replicas = {name: config.replicas for name in ("stt", "tts", "agent")}
    return Fleet(
        log_dir=config.log_dir,
        llm=scripted,
        quiet=True,
        own_redis=True,
        replicas=replicas,
        extra_env=config.extra_env,
    )


async def run_chaos(config: ChaosConfig) -> ChaosResult:
    """Start a fleet, run the callers and the faults, and count what happened."""
    started = time.monotonic()
    async with _fleet(config) as fleet:
        config.progress(f"fleet ready ({len(fleet.procs)} processes), logs in {config.log_dir}")
        watch = await BusWatch(str(fleet.nats_url)).start()
        chaos = _Chaos(config, fleet, watch)
        try:
            async with PhoneSimulator(
                fleet.gateway_url, fleet.public_url, fleet.auth_token, pace=config.pace
            ) as sim:
                callers = ChaosCallers(
                    sim,
                    watch,
                    config.calls,
                    config.lines_per_call,
                    config.patience_s,
                    rng=random.Random(chaos.rng.random()),
                )
                await callers.prepare()
                await _run_with_faults(chaos, callers)
            await settle(watch)
            committed = await committed_replies(watch.bus.js) if watch.bus else {}
            _fill(chaos.result, callers, watch, committed)
        finally:
            await watch.close()
    chaos.result.elapsed_s = time.monotonic() - started
    return chaos.result


async def _run_with_faults(chaos: _Chaos, callers: ChaosCallers) -> None:
    stop_watching = asyncio.Event()
    crash_task = asyncio.create_task(chaos.watch_crashes(stop_watching))
    callers_task = asyncio.create_task(callers.run())
    try:
        await chaos.faults()
        await chaos.restarted()
        await asyncio.sleep(chaos.config.gap_s[1])  # a last stretch of calls after it
    finally:
        callers.stop.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(callers_task, chaos.config.patience_s * 2)
        stop_watching.set()
        await crash_task


def _fill(
    result: ChaosResult, callers: ChaosCallers, watch: BusWatch, committed: dict[str, str]
) -> None:
    result.calls = len(callers.calls)
    result.greetings_missing = callers.greetings_missing
    result.waited_out = sum(1 for r in callers.lines if r.waited_out)
    result.caller_errors = callers.errors
    result.turn_times_s = [r.took_s for r in callers.lines if r.took_s is not None]
    tally_lines(callers.lines, watch, committed, result.tally)
    tally_bus(watch, result.kills, result.tally)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def _turn_times(result: ChaosResult) -> str:
    took = sorted(result.turn_times_s)
    if not took:
        return "n/a"
    p50, p95 = (took[min(len(took) - 1, int(q * len(took)))] for q in (0.5, 0.95))
    return f"{p50:.1f} s / {p95:.1f} s (n={len(took)})"


def report_markdown(result: ChaosResult, machine: str, date: str) -> str:
    t, c = result.tally, result.config
    per = ", ".join(f"{s} {n}" for s, n in sorted(result.kills_per_service.items())) or "none"
    rows = [
        ("machine, date", f"{machine}, {date}"),
        (
            "run",
            f"{result.elapsed_s / 60:.1f} min, {c.calls} concurrent callers, "
            f"{result.calls} calls, {t.lines} caller turns, patience {c.patience_s:.0f} s, "
            f"seed {c.seed}",
        ),
        ("SIGKILLs (per service)", f"{len(result.kills)} ({per})"),
        ("NATS restarts", f"{result.nats_restarts} (down {c.nats_down_s:.0f} s each)"),
        ("Redis restarts", f"{result.redis_restarts} (down {c.redis_down_s:.0f} s each)"),
        ("caller turn: line start → reply heard complete p50 / p95", _turn_times(result)),
        ("lost turns", str(len(t.lost))),
        ("duplicated replies", str(len(t.duplicated))),
        ("mixed replies", str(len(t.mixed))),
        (
            "kill → affected turn complete p50 / p95",
            f"{_fmt(t.percentile(50))} / {_fmt(t.percentile(95))} "
            f"(n={len(t.recovery_s)}, never: {t.unrecovered})",
        ),
        ("crashed services", str(len(result.crashes))),
        ("greetings never heard", str(result.greetings_missing)),
        ("replies played without an assistant event", str(t.uncommitted)),
        ("sentences re-published, same text / new text", f"{t.republished} / {t.rewritten}"),
        ("sentences synthesized twice", str(t.audio_twice)),
        ("caller errors", str(len(result.caller_errors))),
    ]
    out = ["# make chaos", "", "| figure | value |", "| --- | --- |"]
    out += [f"| {k} | {v} |" for k, v in rows]
    for title, items in (
        ("Lost turns", t.lost),
        ("Duplicated replies", t.duplicated),
        ("Mixed replies", t.mixed),
        ("Crashed services", result.crashes),
        ("Caller errors", result.caller_errors),
    ):
        if items:
            out += ["", f"## {title}", ""]
            out += [f"- {item}" for item in items[:30]]
    return "\n".join(out) + "\n"


def eprint(line: str) -> None:
    print(f"[chaos] {line}", file=sys.stderr, flush=True)
