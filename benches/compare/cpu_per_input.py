#!/usr/bin/env python3
"""CPU per input of a chunked map, summed over every process of the run.

Runs each given `procpool-compare` binary in turn (interleaved, ROUNDS
rounds) with only the chunksize-256 `map` and `map_unordered` workloads
(`PROCPOOL_COMPARE_ONLY`), N inputs each, and reads the user + system CPU
time of the binary and its worker processes (`getrusage(RUSAGE_CHILDREN)`
counts every waited-for descendant). CPU time is far less sensitive to a
busy machine than wall time, so two builds compare fairly in one sitting.

Usage (from the project root, after `cargo build --release -p
procpool-benches --bin procpool-compare` of each build, copied aside):

    python3 benches/compare/cpu_per_input.py 1000000 3 /tmp/old /tmp/new
"""

import json
import os
import resource
import subprocess
import sys


def main():
    n, rounds, bins = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    env = dict(os.environ, PROCPOOL_COMPARE_ONLY="map_c256,map_unordered_c256")
    seen = {b: [] for b in bins}
    for _ in range(rounds):
        for b in bins:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            out = subprocess.run(
                [b, "1", str(n), "1", "1", "1"], env=env, capture_output=True, text=True, check=True
            ).stdout
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            d = json.loads(out)
            seen[b].append(
                (d["map_c256"]["tasks_per_s"], d["map_unordered_c256"]["tasks_per_s"], cpu * 1e6 / (2 * n))
            )
    for b, v in seen.items():
        def span(i, scale=1e3, fmt="{:.0f}"):
            lo, hi = min(x[i] for x in v) / scale, max(x[i] for x in v) / scale
            return fmt.format(lo) + "-" + fmt.format(hi)
        print(
            f"{os.path.basename(b):20s} map c256 {span(0)} k/s  map_unordered c256 {span(1)} k/s  "
            f"CPU per input {span(2, 1, '{:.2f}')} us"
        )


if __name__ == "__main__":
    main()
