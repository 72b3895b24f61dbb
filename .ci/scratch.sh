#!/usr/bin/env bash
# The README's Quickstart as a new user meets it: a new cargo project in a
# temporary directory, outside this workspace, made of exactly the README's
# blocks marked `<!-- scratch:Cargo.toml` and `<!-- scratch:src/main.rs`
# (so the README and this check cannot drift apart). Its Cargo.toml gets a
# `[package]`, an empty `[workspace]` (not one of ours) and the README's
# `[dependencies]` with the path to this clone's crates/procpool. Built
# `--offline` with this workspace's Cargo.lock and target dir (every
# dependency is already fetched and built: only procpool and the program
# are compiled), then run twice under a timeout: once with stderr on a
# terminal (`script` gives it one), where the progress bar must be drawn on
# stderr, and once with stderr in a file, where it must not. Each run must
# exit 0 with the README's results. Then the program without its
# `run_if_worker` line, where no bundled worker is found, must exit at once
# saying which line to add. Also checks that
# crates/procpool/examples/first_hour.rs is the same program.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
export CARGO_TERM_COLOR=never
name=procpool-readme-scratch
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "scratch: $*" >&2; exit 1; }

# The fenced block right after the README's `<!-- scratch:NAME ` marker
# (blank lines between them allowed, nothing else).
block() {
    awk -v marker="<!-- scratch:$1 " '
        index($0, marker) == 1 { state = 1; n++; next }
        state == 1 && /^```/ { state = 2; next }
        state == 1 && NF { print "text between the marker and its block: " $0 > "/dev/stderr"; exit 3 }
        state == 2 && /^```/ { state = 0; closed++; next }
        state == 2 { print }
        END { if (n != 1 || closed != 1) { print "marker found " n + 0 " times, block closed " closed + 0 " times" > "/dev/stderr"; exit 4 } }
    ' README.md || fail "README block $1: see above"
}

mkdir -p "$dir/src"
deps=$(block Cargo.toml)
main_rs=$(block src/main.rs)
placeholder='path = "../procpool/crates/procpool"'
replacement="path = \"$repo/crates/procpool\""
grep -qF "$placeholder" <<<"$deps" || fail "README's Cargo.toml block has no $placeholder: $deps"
{
    printf '[package]\nname = "%s"\nversion = "0.1.0"\nedition = "2024"\npublish = false\n\n' "$name"
    printf '# Not a member of the procpool workspace above it (if any).\n[workspace]\n\n'
    printf '%s\n' "${deps//"$placeholder"/"$replacement"}"
} >"$dir/Cargo.toml"
printf '%s\n' "$main_rs" >"$dir/src/main.rs"
# The same versions as the workspace (so nothing but procpool and the
# program is built); cargo drops the entries the program does not use.
cp Cargo.lock "$dir/Cargo.lock"
echo "--- $dir/Cargo.toml"
cat "$dir/Cargo.toml"

# The example CI runs is the README's program (after its //! header).
diff <(grep -v '^//!' crates/procpool/examples/first_hour.rs | sed '/./,$!d') "$dir/src/main.rs" \
    || fail "crates/procpool/examples/first_hour.rs differs from the README's src/main.rs"

echo "--- cargo build --offline"
t0=$(date +%s.%N)
build_log="$dir/build.log"
cargo build --offline --manifest-path "$dir/Cargo.toml" 2>&1 | tee "$build_log"
if grep -q '^warning' "$build_log"; then
    fail "the README's program builds with warnings"
fi
t1=$(date +%s.%N)
bin="$CARGO_TARGET_DIR/debug/$name"

# mix(seed) as the README defines it, computed here: checks the numbers the
# pool's workers printed.
mix() {
    python3 - "$1" <<'EOF'
import sys
seed = int(sys.argv[1]); x = seed; m = (1 << 64) - 1
for _ in range(20000):
    x = ((x ^ seed) * 0x9E3779B97F4A7C15) & m
    x = ((x << 17) | (x >> 47)) & m
print(hex(x))
EOF
}

check_stdout() {
    local out=$1
    grep -qxF "mix(7) = $(mix 7) (same as here: true)" "$out" || fail "mix(7) wrong: $(cat "$out")"
    grep -q '^as expected: ' "$out" || fail "the crash did not cost exactly its future: $(cat "$out")"
    local line seed value
    line=$(grep '^largest digest: seed ' "$out") || fail "no largest digest: $(cat "$out")"
    read -r seed value < <(sed -E 's/^largest digest: seed ([0-9]+) -> (0x[0-9a-f]+)$/\1 \2/' <<<"$line")
    test "$(mix "$seed")" = "$value" || fail "map returned $value for seed $seed, expected $(mix "$seed")"
    # Done: mix(7) and the 20,000 inputs; the crash is the only failure.
    grep -q "^20001 tasks done, 1 failed, 1 workers replaced" "$out" || fail "stats: $(cat "$out")"
}

echo "--- run, stderr on a terminal"
# `script` runs the program on a pseudo-terminal; stdout goes to a file, so
# what reaches the terminal is stderr. With TERM unset or `dumb` (as CI
# may have it) no bar is drawn, as the README says.
TERM=xterm script -qefc "timeout 300 '$bin' >'$dir/tty.out'" "$dir/tty.log" >/dev/null \
    || fail "exit status $? (terminal run); stderr: $(cat "$dir/tty.log")"
cat "$dir/tty.out"
check_stdout "$dir/tty.out"
grep -q '20,000/20,000' "$dir/tty.log" || fail "no finished progress bar on stderr: $(tail -c 600 "$dir/tty.log")"
echo "progress bar on stderr: $(tr '\r' '\n' <"$dir/tty.log" | grep -c '/20,000') redraws, last: $(tr '\r' '\n' <"$dir/tty.log" | grep '20,000/20,000' | tail -n 1 | sed 's/\x1b\[[0-9;]*[A-Za-z]//g')"

echo "--- run, stderr not a terminal"
timeout 300 "$bin" >"$dir/plain.out" 2>"$dir/plain.err" || fail "exit status $? (plain run); stderr: $(cat "$dir/plain.err")"
check_stdout "$dir/plain.out"
if grep -q '/20,000' "$dir/plain.err"; then
    fail "a progress bar drawn into a file: $(head -c 600 "$dir/plain.err")"
fi
t2=$(date +%s.%N)

echo "--- the same program without its run_if_worker line, no bundled worker anywhere"
# The mistake a new user makes: what `main` returning `Err` prints must say
# what to add, at once. The copy runs where no procpool-worker is found.
grep -q '^    procpool::worker::run_if_worker(Registry::collected());$' "$dir/src/main.rs" \
    || fail "the README's main.rs has no run_if_worker line to leave out"
sed -i '/^    procpool::worker::run_if_worker(Registry::collected());$/d' "$dir/src/main.rs"
sed -i 's/^use procpool::{ProcessPool, Registry, TaskError};$/use procpool::{ProcessPool, TaskError};/' "$dir/src/main.rs"
cargo build -q --offline --manifest-path "$dir/Cargo.toml"
mkdir "$dir/alone"
cp "$bin" "$dir/alone/$name"
timeout=$(command -v timeout)
r0=$(date +%s.%N)
set +e
env -u PROCPOOL_WORKER PATH="$dir/alone" "$timeout" 10 "$dir/alone/$name" >"$dir/forgot.out" 2>"$dir/forgot.err"
code=$?
set -e
t3=$(date +%s.%N)
cat "$dir/forgot.err"
awk -v a="$r0" -v b="$t3" 'BEGIN { printf "(exit status '"$code"' after %.0f ms)\n", (b - a) * 1000 }'
test "$code" -eq 1 || fail "exit status $code, expected 1 (main returned Err)"
grep -qF 'did not call `procpool::worker::run_if_worker`' "$dir/forgot.err" || fail "the error does not say what was forgotten"
grep -qF 'add `procpool::worker::run_if_worker(procpool::Registry::collected());` as the first line of `main`' "$dir/forgot.err" \
    || fail "the error does not say which line to add"
awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" 'BEGIN { printf "scratch: build %.1f s, two runs %.1f s, the mistake (build and run) %.1f s\n", b - a, c - b, d - c }'
