"""Redis topologies (issue 14): the shared budget, platform updates and claims
on one Redis server, a Redis Cluster and a master behind Sentinel.

Every topology is started here from the machine's ``redis-server`` (7 or
newer) and stopped at the end (``bench.topology_servers``): one server; a
cluster of three masters with a replica each; a master and a replica watched
by three sentinels. All on this host, on 127.0.0.1.

1. **Budget acquires** (single vs cluster): ``RedisBudget.acquire`` in 1 and
   in 3 OS processes, each with 1 or 64 callers; every caller acquires its
   own scope (a channel's ``chat.update``), so on the cluster the scopes
   spread over the three masters. The limit is far above the rate reached:
   only the mechanism (one Lua round trip) is measured. Processes start
   together (a wall-clock start time) and report their acquires, latencies
   and CPU.
2. **Platform updates** (every topology): round trips and commands per update
   (``bench.topology_writes.updates``).
3. **Claims with WAIT** (every topology): dedupe claims and lock grabs per
   second and their latency, with ``WAIT 1`` where there is a replica and
   without (``bench.topology_writes.claims``).

Run: ``python -m bench.topologies`` (``--seconds`` per row, ``--json PATH``).
Prints Markdown tables. About two minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import resource
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.bucket import quantiles_us
from bench.redis_count import RedisCounter
from bench.topology_servers import KINDS, Target, started
from bench.topology_writes import LIMITS, claims, connected, server_cpu, updates
from core.state.buckets import RedisBudget
from core.state.keys import Keys
from core.state.topology import Topology

PROCESSES = (1, 3)
CALLERS = (1, 64)
START_DELAY = 4.0
"""Seconds from launching the processes to their common start (imports, connecting)."""


# -- one acquiring process ---------------------------------------------------


async def acquire_worker(
    topology: Topology, callers: int, seconds: float, start_at: float, name: str
) -> dict[str, Any]:
    """Run in its own process: ``callers`` callers acquire their scopes from
    ``start_at`` (wall clock) for ``seconds``."""
    redis_client = await connected(topology)
    keys = Keys("crb:", cluster=topology.cluster)
    budget = RedisBudget(redis_client, keys, LIMITS)
    scopes = [f"bench:T1:{name}-{n}:chat.update" for n in range(callers)]
    for scope in scopes:  # warm up: connections, slot map, the script on every master
        await budget.acquire(scope)
    late = time.time() - start_at
    await asyncio.sleep(max(0.0, -late))
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    async def caller(scope: str) -> None:
        clock = time.perf_counter
        while clock() < end:
            start = clock()
            await budget.acquire(scope)
            latencies.append(clock() - start)

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    started_at = time.perf_counter()
    await asyncio.gather(*(caller(scope) for scope in scopes))
    elapsed = time.perf_counter() - started_at
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    assert not budget.degraded, "Redis went away during the benchmark"
    await budget.aclose()
    await redis_client.aclose()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {
        "acquires": len(latencies),
        "elapsed": elapsed,
        "late": max(0.0, late),
        "cpu": cpu,
        "latencies_us": [round(x * 1e6, 1) for x in latencies],
    }


async def acquires(target: Target, processes: int, callers: int, seconds: float) -> dict[str, Any]:
    """``processes`` worker processes at once; their acquires summed, latencies merged."""
    start_at = time.time() + START_DELAY
    run = uuid.uuid4().hex[:6]
    spec = json.dumps(dataclasses.asdict(target.topology))
    launched = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.topologies",
            "--worker",
            spec,
            *("--callers", str(callers), "--seconds", str(seconds)),
            *("--start-at", repr(start_at), "--name", f"{run}-p{p}"),
            stdout=asyncio.subprocess.PIPE,
        )
        for p in range(processes)
    ]
    cpu_task = asyncio.create_task(masters_cpu(target, start_at, seconds))
    outputs = await asyncio.gather(*(proc.communicate() for proc in launched))
    server_cores = await cpu_task
    reports = []
    for proc, (out, _) in zip(launched, outputs, strict=True):
        if proc.returncode != 0:
            raise RuntimeError(f"an acquiring process failed ({proc.returncode})")
        reports.append(json.loads(out))
    latencies = [x / 1e6 for report in reports for x in report["latencies_us"]]
    p50, p99 = quantiles_us(latencies)
    return {
        "topology": target.name,
        "processes": processes,
        "callers_per_process": callers,
        "acquires_per_s": sum(r["acquires"] / r["elapsed"] for r in reports),
        "p50_us": p50,
        "p99_us": p99,
        "client_cores": sum(r["cpu"] / r["elapsed"] for r in reports),
        "server_cores": server_cores,
        "late_s": max(r["late"] for r in reports),
    }


async def masters_cpu(target: Target, start_at: float, seconds: float) -> float:
    """Cores the masters used over the middle of the run (its first and last
    10 % left out, so no process is still warming up or already done)."""
    await asyncio.sleep(max(0.0, start_at - time.time()) + seconds * 0.1)
    cpu0 = await asyncio.to_thread(server_cpu, target)
    await asyncio.sleep(seconds * 0.8)
    cpu1 = await asyncio.to_thread(server_cpu, target)
    return (cpu1 - cpu0) / (seconds * 0.8)


# -- the whole run -------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"seconds": args.seconds, "acquires": [], "updates": [], "claims": []}
    counter = RedisCounter()
    counter.install()
    try:
        with started(KINDS) as targets:
            for kind in ("single", "cluster"):
                for processes in PROCESSES:
                    for callers in CALLERS:
                        row = await acquires(targets[kind], processes, callers, args.seconds)
                        results["acquires"].append(row)
                        print_progress("acquires", row)
            for kind in KINDS:
                row = await updates(
                    targets[kind], args.replies, args.interval, args.update_seconds, counter
                )
                results["updates"].append(row)
                print_progress("updates", row)
            for kind in KINDS:
                target = targets[kind]
                for replicas in sorted({0, target.replicas}):
                    for callers in args.claim_callers:
                        row = await claims(target, replicas, callers, args.seconds)
                        results["claims"].append(row)
                        print_progress("claims", row)
    finally:
        counter.uninstall()
    return results


def print_progress(what: str, row: dict[str, Any]) -> None:
    shown = {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}
    shown.pop("round_trips_by_label", None)
    shown.pop("commands_run_by_name", None)
    print(f"# {what}: {shown}", file=sys.stderr, flush=True)


def report(results: dict[str, Any]) -> None:
    print(f"{results['seconds']:g} s per row; budget limit far above the rate reached\n")
    print(
        "| topology | processes × callers | acquires/s | p50 µs | p99 µs "
        "| client cores | Redis cores |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results["acquires"]:
        print(
            f"| {r['topology']} | {r['processes']} × {r['callers_per_process']} "
            f"| {r['acquires_per_s']:,.0f} | {r['p50_us']:.0f} | {r['p99_us']:.0f} "
            f"| {r['client_cores']:.2f} | {r['server_cores']:.2f} |"
        )
    print()
    print(
        "| topology | updates | round trips / update | commands sent / update "
        "| commands run by masters / update | acquire p50 / p99 µs |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for r in results["updates"]:
        labels = ", ".join(f"{k} {v:.2f}" for k, v in r["round_trips_by_label"].items())
        print(
            f"| {r['topology']} | {r['updates']:,} | {r['round_trips_per_update']:.2f} ({labels}) "
            f"| {r['commands_sent_per_update']:.2f} | {r['commands_run_per_update']:.2f} "
            f"| {r['acquire_p50_us']:.0f} / {r['acquire_p99_us']:.0f} |"
        )
    print()
    print(
        "| topology | WAIT | callers | claims/s | claim p50 / p99 µs "
        "| lock grabs/s | grab p50 / p99 µs | client cores (claims, grabs) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in results["claims"]:
        wait = f"WAIT {r['wait_replicas']}" if r["wait_replicas"] else "none"
        if r["wait_timed_out"]:
            wait += " (timed out)"
        print(
            f"| {r['topology']} | {wait} | {r['callers']} | {r['claims_per_s']:,.0f} "
            f"| {r['claim_p50_us']:.0f} / {r['claim_p99_us']:.0f} | {r['grabs_per_s']:,.0f} "
            f"| {r['grab_p50_us']:.0f} / {r['grab_p99_us']:.0f} "
            f"| {r['claim_client_cores']:.2f}, {r['grab_client_cores']:.2f} |"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each row")
    parser.add_argument("--replies", type=int, default=200, help="replies updating at once")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between updates")
    parser.add_argument("--update-seconds", type=float, default=5.0, help="window counted")
    parser.add_argument(
        "--claim-callers", type=int, nargs="+", default=[1, 16], help="concurrent claimers"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    # one acquiring process (launched by ``acquires``)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--callers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--name", default="w", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        spec["sentinels"] = tuple(tuple(s) for s in spec["sentinels"])
        out = asyncio.run(
            acquire_worker(Topology(**spec), args.callers, args.seconds, args.start_at, args.name)
        )
        json.dump(out, sys.stdout)
        return
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s: %(message)s"
    )
    results = asyncio.run(main_async(args))
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
