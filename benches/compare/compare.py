#!/usr/bin/env python3
"""procpool next to CPython's process pools: the same workloads, one run.

CPython side (standard library only): concurrent.futures.ProcessPoolExecutor
(map with chunksize 1 and 256, submit->result latency with one task in
flight, a 1 MiB bytes echo round trip) and multiprocessing.Pool.imap_unordered
(chunksize 1 and 256), 2 workers each. The procpool side is the
`procpool-compare` binary (benches/src/bin/procpool-compare.rs), which runs
the same workloads on a ProcessPool of 2 workers, plus `map` and
`map_unordered` with no chunksize (auto chunking, as many inputs as the
chunksize-256 maps), and prints JSON.

Usage: benches/compare/run.sh (builds the Rust side in release, then runs
this file). Direct: compare.py --procpool PATH/TO/procpool-compare.
"""

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor

WORKERS = 2
MIB = 1024 * 1024


def square(x):
    return x * x


def echo(b):
    return b


def payload(n):
    """The same bytes as procpool_benches::payload(n)."""
    pattern = bytes((i * 31) % 251 for i in range(251))
    return (pattern * (n // 251 + 1))[:n]


def expected_sum(n):
    return (n - 1) * n * (2 * n - 1) // 6


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_seconds(fn, repeats):
    return statistics.median(timed(fn) for _ in range(repeats))


def check_sum(results, n):
    total = sum(results)
    if total != expected_sum(n):
        raise AssertionError(f"wrong sum of squares: {total}")


def map_entry(n, seconds):
    return {"n": n, "seconds": seconds, "tasks_per_s": n / seconds}


def python_side(args):
    out = {}
    with ProcessPoolExecutor(max_workers=WORKERS) as ex:
        check_sum(ex.map(square, range(1000)), 1000)  # start both workers
        for key, n, chunksize in (("map_c1", args.n_c1, 1), ("map_c256", args.n_c256, 256)):
            secs = median_seconds(
                lambda n=n, c=chunksize: check_sum(ex.map(square, range(n), chunksize=c), n),
                args.repeats,
            )
            out["ppe_" + key] = map_entry(n, secs)
        lat = []
        for i in range(args.latency_rounds):
            start = time.perf_counter()
            r = ex.submit(square, i).result()
            lat.append(time.perf_counter() - start)
            assert r == i * i
        out["ppe_latency"] = {"rounds": args.latency_rounds, "median_s": statistics.median(lat)}
        data = payload(MIB)
        rt = []
        for _ in range(args.echo_rounds):
            start = time.perf_counter()
            back = ex.submit(echo, data).result()
            rt.append(time.perf_counter() - start)
            assert len(back) == MIB
        out["ppe_echo_1mib"] = {"rounds": args.echo_rounds, "median_s": statistics.median(rt)}
    with multiprocessing.Pool(WORKERS) as pool:
        check_sum(pool.imap_unordered(square, range(1000)), 1000)
        for key, n, chunksize in (
            ("imap_unordered_c1", args.n_c1, 1),
            ("imap_unordered_c256", args.n_c256, 256),
        ):
            secs = median_seconds(
                lambda n=n, c=chunksize: check_sum(pool.imap_unordered(square, range(n), c), n),
                args.repeats,
            )
            out["mp_" + key] = map_entry(n, secs)
    return out


def procpool_side(args):
    cmd = [
        args.procpool,
        str(args.n_c1),
        str(args.n_c256),
        str(args.latency_rounds),
        str(args.echo_rounds),
        str(args.repeats),
    ]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, check=True, timeout=300)
    return json.loads(done.stdout)


def human(seconds):
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--procpool", required=True, help="path to the procpool-compare binary")
    p.add_argument("--n-c1", type=int, default=20_000, help="tasks per map at chunksize 1")
    p.add_argument("--n-c256", type=int, default=200_000, help="tasks per map at chunksize 256")
    p.add_argument("--latency-rounds", type=int, default=2_000)
    p.add_argument("--echo-rounds", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3, help="runs per map workload (median kept)")
    p.add_argument("--json", action="store_true", help="print both sides as JSON instead")
    args = p.parse_args()

    wall = time.perf_counter()
    t = time.perf_counter()
    py = python_side(args)
    py_wall = time.perf_counter() - t
    t = time.perf_counter()
    rs = procpool_side(args)
    rs_wall = time.perf_counter() - t
    wall = time.perf_counter() - wall

    if args.json:
        print(json.dumps({"cpython": py, "procpool": rs, "wall_s": wall}, indent=2))
        return

    print(
        f"# {WORKERS} workers each; CPython {platform.python_version()} "
        f"(start method {multiprocessing.get_start_method()}), {os.cpu_count()} CPUs; "
        f"maps: median of {args.repeats}, latency/echo: median of single round trips"
    )
    rows = [
        # (label, python key, python pool, procpool key, procpool API, kind)
        ("map, chunksize 1", "ppe_map_c1", "ProcessPoolExecutor.map", "map_c1", "map", "rate"),
        ("map, chunksize 256", "ppe_map_c256", "ProcessPoolExecutor.map", "map_c256", "map", "rate"),
        (
            "unordered, chunksize 1",
            "mp_imap_unordered_c1",
            "Pool.imap_unordered",
            "map_unordered_c1",
            "map_unordered",
            "rate",
        ),
        (
            "unordered, chunksize 256",
            "mp_imap_unordered_c256",
            "Pool.imap_unordered",
            "map_unordered_c256",
            "map_unordered",
            "rate",
        ),
        # procpool with no chunksize (auto chunking) against CPython's best
        # fixed chunksize here, 256.
        ("map, auto vs CPython 256", "ppe_map_c256", "ProcessPoolExecutor.map", "map_auto", "map", "rate"),
        (
            "unordered, auto vs CPy 256",
            "mp_imap_unordered_c256",
            "Pool.imap_unordered",
            "map_unordered_auto",
            "map_unordered",
            "rate",
        ),
        ("submit→result, 1 in flight", "ppe_latency", "ProcessPoolExecutor", "latency", "submit", "time"),
        ("1 MiB bytes echo round trip", "ppe_echo_1mib", "ProcessPoolExecutor", "echo_1mib", "submit(Echo)", "time"),
    ]
    head = f"{'workload':<28} {'CPython':<24} {'':>14}   {'procpool':<14} {'':>14}   procpool vs CPython"
    print(head)
    print("-" * len(head))
    for label, pk, papi, rk, rapi, kind in rows:
        a, b = py[pk], rs[rk]
        if kind == "rate":
            pv, rv = f"{a['tasks_per_s']:,.0f}/s", f"{b['tasks_per_s']:,.0f}/s"
            speedup = b["tasks_per_s"] / a["tasks_per_s"]
        else:
            pv, rv = human(a["median_s"]), human(b["median_s"])
            speedup = a["median_s"] / b["median_s"]
        verdict = f"{speedup:.2f}× faster" if speedup >= 1 else f"{1 / speedup:.2f}× slower"
        print(f"{label:<28} {papi:<24} {pv:>14}   {rapi:<14} {rv:>14}   {verdict}")
    print(
        "# procpool with no chunksize (auto) vs its own chunksize 256, same run: "
        f"map {rs['map_auto']['tasks_per_s'] / rs['map_c256']['tasks_per_s']:.2f}×, "
        f"map_unordered {rs['map_unordered_auto']['tasks_per_s'] / rs['map_unordered_c256']['tasks_per_s']:.2f}× "
        f"(chunks of {rs['map_auto']['last_chunksize']} and "
        f"{rs['map_unordered_auto']['last_chunksize']} at the end)"
    )
    print(
        f"# wall: CPython side {py_wall:.1f} s, procpool side {rs_wall:.1f} s, total {wall:.1f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
