#!/usr/bin/env bash
# procpool next to CPython's ProcessPoolExecutor and multiprocessing.Pool:
# builds the Rust side (procpool-compare) in release, then runs compare.py,
# which runs both and prints the ratios side by side. Extra arguments go to
# compare.py (e.g. --json, --repeats 5). Python 3 standard library only.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

cargo build --release --quiet -p procpool-benches --bin procpool-compare
target_dir="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"

exec python3 "$root/benches/compare/compare.py" \
    --procpool "$target_dir/release/procpool-compare" "$@"
