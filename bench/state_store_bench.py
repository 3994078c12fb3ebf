"""The state store under contention: many writers on one session, on a real Redis, with the
product's own retry policy (one optimistic try, then the session's write lease; lost races
retried until ``conflict_deadline_s``).

``--writers`` stores, each with its own connection pool as replicas have, each make
``--updates`` ``StateStore.update`` calls on one session (every update increments its
writer's counter in the document), while a pusher queues notifications and two syncers
merge them in. Reports elapsed time, updates/s, attempts per update, per-update latency
p50/p95/max, and lost updates (must be 0); appends a markdown row to ``--out``.

Runs against a redis-server of its own (append-only, a free port) unless ``--url`` names
one. The default is the issue's 50 writers x 1,000 updates (a few minutes on two busy
cores); the test suite runs 50 x 200 (test_state_store_contention.py).

    uv run python bench/state_store_bench.py [--writers 50 --updates 1000] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "libs/common/tests"))

from store_testkit import Contention, contend

from dealerline_common.state_store import RedisStateStore
from dealerline_common.state_store.local_redis import RedisServer
from dealerline_sim.bench import machine


async def run(url: str, writers: int, updates: int) -> Contention:
    ns = f"bench:{uuid.uuid4().hex[:8]}:"
    return await contend(
        lambda: RedisStateStore(url, namespace=ns, ttl_s=600.0),
        "bench-session",
        writers=writers,
        updates=updates,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--writers", type=int, default=50)
    ap.add_argument("--updates", type=int, default=1000)
    ap.add_argument("--url", help="a Redis to use (default: a redis-server of its own)")
    ap.add_argument("--out", type=Path, help="append a markdown row to this file")
    args = ap.parse_args()
    if args.url:
        seen = asyncio.run(run(args.url, args.writers, args.updates))
    else:
        with RedisServer() as server:
            seen = asyncio.run(run(server.url, args.writers, args.updates))
    print(seen.summary())
    n = seen.writers * seen.updates
    row = (
        f"| {dt.date.today()} | {machine()} | {seen.writers} x {seen.updates} | "
        f"{seen.elapsed_s:.0f} s | {n / seen.elapsed_s:.0f}/s | {seen.attempts / n:.2f} | "
        f"{seen.quantile(0.5) * 1000:.0f} / {seen.quantile(0.95) * 1000:.0f} / "
        f"{max(seen.latencies_s) * 1000:.0f} ms | {seen.lost()} |"
    )
    print(
        "| date | machine | writers x updates | elapsed | updates | attempts/update "
        "| latency p50 / p95 / max | lost |"
    )
    print(row)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            f.write(row + "\n")
    return 1 if seen.lost() else 0


if __name__ == "__main__":
    sys.exit(main())
