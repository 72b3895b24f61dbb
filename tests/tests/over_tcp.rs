//! The end-to-end suites of the local pool, run again with every process
//! pool's workers dialing back over TCP loopback (secret handshake,
//! heartbeats, `TCP_NODELAY`) instead of inheriting a `socketpair`.
//!
//! The suites are included as modules, not copied: `procpool_e2e::builder`
//! sees this binary's name and builds every pool with `Transport::Tcp`.

#[path = "async_tokio.rs"]
mod async_tokio;
#[path = "auto_chunks.rs"]
mod auto_chunks;
#[path = "core.rs"]
mod core;
#[path = "faults.rs"]
mod faults;
#[path = "futures.rs"]
mod futures;
#[path = "shared.rs"]
mod shared;
#[path = "supervision.rs"]
mod supervision;
#[path = "waiting.rs"]
mod waiting;

#[test]
fn this_binary_runs_over_tcp() {
    assert_eq!(procpool_e2e::transport(), procpool::Transport::Tcp);
    let pool = procpool_e2e::process_pool_of(procpool_e2e::test_worker!(), 1);
    let address = pool
        .attach_info()
        .expect("a TCP pool listens")
        .address()
        .to_owned();
    assert!(address.starts_with("tcp://127.0.0.1:"), "{address}");
    procpool_e2e::still_works(&pool);
}
