//! Workers placed by a real cluster manager: Slurm's `srun` (over the
//! two-node test cluster that `.ci/run` brings up with
//! `../shared/cluster/slurm-up.sh --nodes 2`) and Open MPI's `mpirun`.
//!
//! Under `CI=true` these tests fail if the cluster or `mpirun` is missing.
//! Elsewhere they are skipped, with a message, only when `SLURM_CONF` is
//! unset (or `mpirun` is not installed): `source .ci/cluster.sh` starts
//! both.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use procpool::{Launcher, ProcessPool, ProcessPoolBuilder, State, TaskError, WorkerCommand};
use procpool_e2e::{still_works, watchdog};
use procpool_tasks::{Placement, Sleep, Square, WhereAmI};

const LIMIT: Duration = Duration::from_secs(120);
const WORKER: &str = env!("CARGO_BIN_EXE_procpool-test-worker");

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The cluster's dial-back address and node count, or `None` (skip) when
/// no cluster runs here and this is not CI.
fn slurm() -> Option<(String, u32)> {
    if std::env::var_os("SLURM_CONF").is_none() {
        assert!(
            !in_ci(),
            "CI=true but SLURM_CONF is unset: .ci/run must start the test cluster (.ci/cluster.sh)"
        );
        eprintln!(
            "skipped: SLURM_CONF is unset. Start the test cluster with `source .ci/cluster.sh` \
             (or `eval \"$(../shared/cluster/slurm-up.sh --nodes 2)\"`) and run again."
        );
        return None;
    }
    let addr = std::env::var("PROCPOOL_SLURM_ADDR").unwrap_or_else(|_| "127.0.0.1".into());
    let nodes = std::env::var("PROCPOOL_SLURM_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    Some((addr, nodes))
}

fn srun_pool(addr: &str, nodes: u32) -> ProcessPoolBuilder {
    ProcessPool::builder()
        .launcher(
            Launcher::srun()
                .nodes(nodes)
                .tasks_per_node(4 / nodes)
                .overcommit(true)
                .time("10"),
        )
        .worker(WorkerCommand::program(WORKER))
        .advertise(addr)
        .launch_timeout(Duration::from_secs(60))
}

#[test]
fn srun_pool_of_four_over_two_nodes_runs_10k_tasks() {
    let Some((addr, nodes)) = slurm() else { return };
    watchdog(LIMIT, move || {
        let pool = srun_pool(&addr, nodes).build().expect("srun pool starts");
        assert_eq!(pool.workers(), 4);
        let address = pool.attach_info().unwrap().address().to_owned();
        assert!(address.starts_with(&format!("tcp://{addr}:")), "{address}");
        // 10k tasks, each saying where it ran.
        let placements: Vec<Placement> = pool
            .map((0..10_000).map(|_| WhereAmI))
            .chunksize(16)
            .map(|r| r.expect("a task failed"))
            .collect();
        assert_eq!(placements.len(), 10_000);
        let mut per_host: BTreeMap<String, usize> = BTreeMap::new();
        for p in &placements {
            *per_host.entry(p.host.clone()).or_default() += 1;
        }
        eprintln!("tasks per node: {per_host:?}");
        assert_eq!(per_host.len(), nodes as usize, "ran on {per_host:?}");
        if nodes == 2 {
            assert!(per_host.contains_key("pp-node2"), "{per_host:?}");
        }
        let ranks: BTreeSet<u32> = placements.iter().filter_map(|p| p.rank).collect();
        assert_eq!(ranks, (0..4).collect(), "Slurm ranks");
        let steps: BTreeSet<&str> = placements
            .iter()
            .filter_map(|p| p.slurm_step.as_deref())
            .collect();
        assert_eq!(steps.len(), 1, "one job step: {steps:?}");
        // And 10k results that are right.
        let squares: Vec<u64> = pool
            .map((0..10_000u64).map(Square))
            .chunksize(64)
            .map(|r| r.unwrap())
            .collect();
        assert!(
            squares
                .iter()
                .enumerate()
                .all(|(i, &s)| s == (i as u64) * (i as u64))
        );
        let stats = pool.stats();
        assert!(stats.completed >= 20_000, "{stats:?}");
    });
}

#[test]
fn scancel_of_the_step_fails_only_the_running_tasks_and_the_rest_finish() {
    let Some((addr, nodes)) = slurm() else { return };
    watchdog(LIMIT, move || {
        let pool = srun_pool(&addr, nodes)
            .max_restarts(20)
            .build()
            .expect("srun pool starts");
        let step = pool
            .submit(WhereAmI)
            .unwrap()
            .result()
            .unwrap()
            .slurm_step
            .expect("the worker runs in a Slurm step");
        // Four tasks run (one per worker), four more wait behind them.
        let futures: Vec<_> = (0..8)
            .map(|_| pool.submit(Sleep { millis: 3000 }).unwrap())
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while futures
            .iter()
            .filter(|f| f.state() == State::Running)
            .count()
            < 4
        {
            assert!(std::time::Instant::now() < deadline, "four tasks never ran");
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = Command::new("scancel")
            .arg(&step)
            .output()
            .expect("scancel runs");
        assert!(out.status.success(), "scancel {step}: {out:?}");
        let mut died = 0;
        for f in futures {
            match f.result() {
                Ok(v) => assert_eq!(v, 3000),
                Err(TaskError::WorkerDied { .. }) => died += 1,
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            (1..=4).contains(&died),
            "{died} tasks failed (4 ran when the step was cancelled)"
        );
        // The replacements are new steps, and the pool is whole again.
        let after = pool.submit(WhereAmI).unwrap().result().unwrap().slurm_step;
        assert_ne!(after.as_deref(), Some(step.as_str()));
        still_works(&pool);
        assert!(pool.broken().is_none());
    });
}

#[test]
fn mpirun_launcher_runs_the_same_smoke_test() {
    if Command::new("mpirun").arg("--version").output().is_err() {
        assert!(
            !in_ci(),
            "CI=true but mpirun is missing: .ci/run installs openmpi-bin"
        );
        eprintln!(
            "skipped: mpirun is not installed (`source .ci/cluster.sh` installs openmpi-bin)"
        );
        return;
    }
    watchdog(LIMIT, || {
        let pool = ProcessPool::builder()
            .launcher(
                Launcher::mpirun()
                    .oversubscribe(true)
                    .allow_run_as_root(true),
            )
            .worker(WorkerCommand::program(WORKER))
            .workers(2)
            .listen(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .launch_timeout(Duration::from_secs(60))
            .build()
            .expect("mpirun pool starts");
        let placements: Vec<Placement> = pool
            .map((0..1000).map(|_| WhereAmI))
            .chunksize(8)
            .map(|r| r.unwrap())
            .collect();
        let ranks: BTreeSet<u32> = placements.iter().filter_map(|p| p.rank).collect();
        assert_eq!(ranks, [0, 1].into(), "MPI ranks");
        let squares: u64 = pool.map((0..1000u64).map(Square)).map(|r| r.unwrap()).sum();
        assert_eq!(squares, (0..1000u64).map(|x| x * x).sum());
        still_works(&pool);
    });
}
