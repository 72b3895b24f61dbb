//! How a pool gets its workers (the launcher seam of DESIGN.md); how they
//! reach it is [`Transport`](super::Transport).
//!
//! [`Launcher::Spawn`] forks every worker itself. Every other launcher has
//! the workers *dial in*: the pool listens (a local socket, or TCP), and
//! workers started by someone else — `srun`, `mpirun`, a person, another
//! scheduler — connect with `--connect ADDRESS` and prove they know the
//! pool's secret, which travels in their environment (`PROCPOOL_TOKEN`),
//! never on a command line. The pool never signals a process it did not
//! start: a remote worker is stopped by closing its connection.
//!
//! Every launcher but `Spawn` is the `remote` feature.

#[cfg(feature = "remote")]
use std::ffi::{OsStr, OsString};
use std::fmt;
#[cfg(feature = "remote")]
use std::process::Command;
#[cfg(feature = "remote")]
use std::sync::Arc;

/// How the pool gets its workers; see the module docs. Without the
/// `remote` feature, only [`Launcher::Spawn`]; with it also attach,
/// `srun`, `mpirun` and your own (`Launcher::srun` has an example).
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Launcher {
    /// The pool starts every worker itself (the default): on an inherited
    /// `socketpair` end, or dialing back over TCP loopback with
    /// `Transport::Tcp` (the `remote` feature).
    #[default]
    Spawn,
    /// Workers started by someone else attach over the pool's socket (a
    /// local socket in a 0700 directory with a uid check, or TCP), with the
    /// secret handshake; see
    /// [`ProcessPool::attach_info`](super::ProcessPool::attach_info).
    /// `workers(n)` is then the most that may attach at once, and `build()`
    /// returns without waiting for any.
    #[cfg(feature = "remote")]
    #[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
    Attach,
    /// As [`Launcher::Attach`], and `build()` prints to stderr the exact
    /// command a person or another scheduler should run.
    #[cfg(feature = "remote")]
    #[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
    External,
    /// A launcher program (`srun`, `mpirun`, or one of yours) starts the
    /// workers, which dial back over TCP. `build()` waits until all have
    /// joined, and replacements are launched for workers that die.
    #[cfg(feature = "remote")]
    #[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
    Command(Arc<dyn Launch>),
}

impl fmt::Debug for Launcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Launcher::Spawn => f.write_str("Spawn"),
            #[cfg(feature = "remote")]
            Launcher::Attach => f.write_str("Attach"),
            #[cfg(feature = "remote")]
            Launcher::External => f.write_str("External"),
            #[cfg(feature = "remote")]
            Launcher::Command(l) => f.debug_tuple("Command").field(l).finish(),
        }
    }
}

#[cfg(feature = "remote")]
impl Launcher {
    /// Slurm's `srun`; see [`Srun`].
    ///
    /// ```no_run
    /// use procpool::{Launcher, ProcessPool};
    ///
    /// // Four workers over two Slurm nodes, dialing back over TCP.
    /// let pool = ProcessPool::builder()
    ///     .launcher(Launcher::srun().nodes(2).tasks_per_node(2))
    ///     .build()?;
    /// # Ok::<(), procpool::BuildError>(())
    /// ```
    pub fn srun() -> Srun {
        Srun::default()
    }

    /// OpenMPI's or MPICH's `mpirun`; see [`Mpirun`].
    pub fn mpirun() -> Mpirun {
        Mpirun::default()
    }

    /// Whether workers dial in (every launcher but [`Launcher::Spawn`]).
    pub(crate) fn dials_in(&self) -> bool {
        !matches!(self, Launcher::Spawn)
    }

    pub(crate) fn command(&self) -> Option<&Arc<dyn Launch>> {
        match self {
            Launcher::Command(l) => Some(l),
            _ => None,
        }
    }
}

#[cfg(feature = "remote")]
#[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
impl From<Srun> for Launcher {
    fn from(s: Srun) -> Launcher {
        Launcher::Command(Arc::new(s))
    }
}

#[cfg(feature = "remote")]
#[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
impl From<Mpirun> for Launcher {
    fn from(m: Mpirun) -> Launcher {
        Launcher::Command(Arc::new(m))
    }
}

/// What a [`Launch`] is asked to start.
#[cfg(feature = "remote")]
#[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
#[derive(Debug)]
pub struct LaunchRequest<'a> {
    /// How many workers.
    pub workers: usize,
    /// `true` for the pool's first launch; `false` for replacements, which
    /// should ignore placement options that assume the full count.
    pub first: bool,
    /// The worker's program and arguments, `--connect ADDRESS` included.
    pub argv: &'a [OsString],
    /// Variables the workers need, the secret among them. The pool sets
    /// them on the launcher's own environment; a launcher that does not
    /// pass its environment on must forward them by *name* (never put a
    /// value on the command line).
    pub env: &'a [(OsString, OsString)],
}

/// A program that starts workers somewhere (Slurm, MPI, your scheduler).
/// The pool runs [`Launch::command`] as its child, forwards its output to
/// stderr, and stops it when the pool shuts down.
#[cfg(feature = "remote")]
#[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
pub trait Launch: Send + Sync + fmt::Debug {
    /// A short name for logs (`"srun"`).
    fn name(&self) -> &str;
    /// The command that starts `req.workers` copies of `req.argv`.
    fn command(&self, req: &LaunchRequest<'_>) -> Command;
    /// The worker count this launcher implies, used when the builder sets
    /// none (e.g. `nodes × tasks_per_node`).
    fn default_workers(&self) -> Option<usize> {
        None
    }
}

/// Slurm's `srun`: inside an allocation (`sbatch`, `salloc`) it starts a
/// job step there; outside one it asks for its own allocation.
///
/// Each worker is a task of the step. Replacements are new steps of one
/// task. `srun` passes its whole environment to the tasks
/// (`--export=ALL`), so the secret reaches them without a command line.
#[cfg(feature = "remote")]
#[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct Srun {
    program: Option<OsString>,
    nodes: Option<u32>,
    tasks_per_node: Option<u32>,
    partition: Option<String>,
    time: Option<String>,
    overcommit: bool,
    args: Vec<OsString>,
}

#[cfg(feature = "remote")]
impl Srun {
    /// The `srun` to run (default: `srun` on `PATH`).
    pub fn program(mut self, p: impl Into<OsString>) -> Self {
        self.program = Some(p.into());
        self
    }
    /// `--nodes`.
    pub fn nodes(mut self, n: u32) -> Self {
        self.nodes = Some(n);
        self
    }
    /// `--ntasks-per-node`.
    pub fn tasks_per_node(mut self, n: u32) -> Self {
        self.tasks_per_node = Some(n);
        self
    }
    /// `--partition`.
    pub fn partition(mut self, p: impl Into<String>) -> Self {
        self.partition = Some(p.into());
        self
    }
    /// `--time` (Slurm's format, e.g. `"30"` or `"1:00:00"`).
    pub fn time(mut self, t: impl Into<String>) -> Self {
        self.time = Some(t.into());
        self
    }
    /// `--overcommit`: more tasks than CPUs.
    pub fn overcommit(mut self, yes: bool) -> Self {
        self.overcommit = yes;
        self
    }
    /// Any other `srun` argument (before the worker's command).
    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }
}

#[cfg(feature = "remote")]
impl Launch for Srun {
    fn name(&self) -> &str {
        "srun"
    }

    fn command(&self, req: &LaunchRequest<'_>) -> Command {
        let mut cmd = Command::new(self.program.as_deref().unwrap_or(OsStr::new("srun")));
        cmd.arg(format!("--ntasks={}", req.workers))
            .arg("--job-name=procpool-worker")
            .arg("--kill-on-bad-exit=0")
            .arg("--export=ALL");
        if req.first {
            if let Some(n) = self.nodes {
                cmd.arg(format!("--nodes={n}"));
            }
            if let Some(n) = self.tasks_per_node {
                cmd.arg(format!("--ntasks-per-node={n}"));
            }
        }
        if let Some(p) = &self.partition {
            cmd.arg(format!("--partition={p}"));
        }
        if let Some(t) = &self.time {
            cmd.arg(format!("--time={t}"));
        }
        if self.overcommit {
            cmd.arg("--overcommit");
        }
        cmd.args(&self.args).arg("--").args(req.argv);
        cmd.envs(req.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn default_workers(&self) -> Option<usize> {
        Some((self.nodes? * self.tasks_per_node?) as usize)
    }
}

/// Which `mpirun` speaks: they forward environment variables differently.
#[cfg(feature = "remote")]
#[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MpiFlavor {
    /// OpenMPI: `-x NAME` per variable (the default).
    #[default]
    OpenMpi,
    /// MPICH / Hydra: `-genvlist NAME,NAME`.
    Mpich,
}

/// `mpirun -n N`: workers are the ranks of an MPI job (they do not use MPI
/// themselves; MPI only places and starts them). Replacements are new
/// `mpirun -n 1` jobs. The secret is forwarded by name (`-x` or
/// `-genvlist`).
#[cfg(feature = "remote")]
#[cfg_attr(docsrs, doc(cfg(feature = "remote")))]
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct Mpirun {
    program: Option<OsString>,
    flavor: MpiFlavor,
    hosts: Option<String>,
    oversubscribe: bool,
    allow_run_as_root: bool,
    args: Vec<OsString>,
}

#[cfg(feature = "remote")]
impl Mpirun {
    /// The `mpirun` to run (default: `mpirun` on `PATH`).
    pub fn program(mut self, p: impl Into<OsString>) -> Self {
        self.program = Some(p.into());
        self
    }
    /// OpenMPI (default) or MPICH.
    pub fn flavor(mut self, f: MpiFlavor) -> Self {
        self.flavor = f;
        self
    }
    /// `--host` (OpenMPI) / `-hosts` (MPICH), e.g. `"node1:2,node2:2"`.
    pub fn hosts(mut self, h: impl Into<String>) -> Self {
        self.hosts = Some(h.into());
        self
    }
    /// OpenMPI's `--oversubscribe`: more ranks than slots.
    pub fn oversubscribe(mut self, yes: bool) -> Self {
        self.oversubscribe = yes;
        self
    }
    /// OpenMPI's `--allow-run-as-root` (containers, CI).
    pub fn allow_run_as_root(mut self, yes: bool) -> Self {
        self.allow_run_as_root = yes;
        self
    }
    /// Any other `mpirun` argument (before the worker's command).
    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }
}

#[cfg(feature = "remote")]
impl Launch for Mpirun {
    fn name(&self) -> &str {
        "mpirun"
    }

    fn command(&self, req: &LaunchRequest<'_>) -> Command {
        let mut cmd = Command::new(self.program.as_deref().unwrap_or(OsStr::new("mpirun")));
        cmd.arg("-n").arg(req.workers.to_string());
        match self.flavor {
            MpiFlavor::OpenMpi => {
                for (k, _) in req.env {
                    cmd.arg("-x").arg(k);
                }
                if self.oversubscribe {
                    cmd.arg("--oversubscribe");
                }
                if self.allow_run_as_root {
                    cmd.arg("--allow-run-as-root");
                }
                if let Some(h) = &self.hosts {
                    cmd.arg("--host").arg(h);
                }
            }
            MpiFlavor::Mpich => {
                let names: Vec<&str> = req.env.iter().filter_map(|(k, _)| k.to_str()).collect();
                if !names.is_empty() {
                    cmd.arg("-genvlist").arg(names.join(","));
                }
                if let Some(h) = &self.hosts {
                    cmd.arg("-hosts").arg(h);
                }
            }
        }
        cmd.args(&self.args).args(req.argv);
        cmd.envs(req.env.iter().map(|(k, v)| (k, v)));
        cmd
    }
}

#[cfg(all(test, feature = "remote"))]
mod tests {
    use super::*;

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn req<'a>(
        argv: &'a [OsString],
        env: &'a [(OsString, OsString)],
        first: bool,
    ) -> LaunchRequest<'a> {
        LaunchRequest {
            workers: 4,
            first,
            argv,
            env,
        }
    }

    #[test]
    fn srun_command_carries_placement_but_never_the_secret() {
        let argv = vec!["/w".into(), "--connect".into(), "tcp://h:1".into()];
        let env = vec![("PROCPOOL_TOKEN".into(), "s3cret".into())];
        let s = Launcher::srun()
            .nodes(2)
            .tasks_per_node(2)
            .partition("debug")
            .time("5")
            .overcommit(true);
        assert_eq!(s.default_workers(), Some(4));
        let cmd = s.command(&req(&argv, &env, true));
        let a = args(&cmd);
        for want in [
            "--ntasks=4",
            "--nodes=2",
            "--ntasks-per-node=2",
            "--partition=debug",
            "--time=5",
            "--overcommit",
            "--export=ALL",
        ] {
            assert!(a.iter().any(|x| x == want), "{want} missing from {a:?}");
        }
        assert_eq!(&a[a.len() - 4..], ["--", "/w", "--connect", "tcp://h:1"]);
        assert!(
            !a.iter().any(|x| x.contains("s3cret")),
            "secret on the command line: {a:?}"
        );
        assert!(
            cmd.get_envs()
                .any(|(k, v)| k == "PROCPOOL_TOKEN" && v == Some(OsStr::new("s3cret")))
        );
        // A replacement does not ask for the full placement.
        let a = args(&s.command(&req(&argv, &env, false)));
        assert!(!a.iter().any(|x| x.starts_with("--nodes")), "{a:?}");
    }

    #[test]
    fn mpirun_forwards_variables_by_name() {
        let argv = vec!["/w".into()];
        let env = vec![("PROCPOOL_TOKEN".into(), "s3cret".into())];
        let a = args(
            &Launcher::mpirun()
                .oversubscribe(true)
                .allow_run_as_root(true)
                .command(&req(&argv, &env, true)),
        );
        assert_eq!(&a[..4], ["-n", "4", "-x", "PROCPOOL_TOKEN"]);
        assert!(
            a.contains(&"--oversubscribe".to_owned())
                && a.contains(&"--allow-run-as-root".to_owned())
        );
        assert!(!a.iter().any(|x| x.contains("s3cret")));
        let a = args(
            &Launcher::mpirun()
                .flavor(MpiFlavor::Mpich)
                .command(&req(&argv, &env, true)),
        );
        assert_eq!(&a[..4], ["-n", "4", "-genvlist", "PROCPOOL_TOKEN"]);
    }
}
