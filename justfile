# The habits, runnable. `just ci` is what CI runs (.ci/run).

# Run the whole test suite (the README's test command).
test:
    cargo test --workspace

# The main job: where a task's time goes, thread pool vs process pool.
overhead:
    cargo run --release -p procpool-cli -- overhead

# Criterion benches (one question per file in benches/benches/).
bench:
    cargo bench -p procpool-benches

fmt:
    cargo fmt --all

lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

ci:
    bash .ci/run

# procpool next to CPython concurrent.futures and multiprocessing (Python 3, nothing to install).
compare:
    bash benches/compare/run.sh
