//! What the pool knows of its workers' tasks, from their hellos: a task no
//! worker can run is refused at `submit` (SEMANTICS 28) with a message that
//! names the task, the worker program and what it knows.
//!
//! # Locking
//!
//! [`KnownTasks::known`] is a leaf lock: written by a worker's life thread
//! right after its hello (each hello adds to what is known), read by
//! `submit`, which clones the `Arc` and checks outside the lock. Nothing
//! else is taken while it is held.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use procpool_wire::handshake::Hello;

use crate::lock::lock;

/// Tasks announced by the pool's workers.
#[derive(Default)]
pub(crate) struct KnownTasks {
    /// `None` until the first worker said hello.
    known: Mutex<Option<Arc<Announced>>>,
}

/// The union of what the workers announced.
struct Announced {
    /// The first worker's program (the others normally run the same).
    program: String,
    /// Every announcement listed every task the worker has.
    complete: bool,
    /// Name → (fingerprint, input type).
    tasks: HashMap<String, (u64, String)>,
}

/// Why no worker can run a task.
pub(crate) struct Unrunnable {
    pub program: String,
    pub known: Vec<String>,
    pub reason: String,
}

/// How many known names a message lists.
const LISTED: usize = 12;

impl KnownTasks {
    /// Adds what a worker's hello announced.
    pub(crate) fn learn(&self, hello: &Hello) {
        let mut known = lock(&self.known);
        let same = known.as_ref().is_some_and(|k| {
            k.complete == hello.tasks_complete
                && k.tasks.len() == hello.tasks.len()
                && hello
                    .tasks
                    .iter()
                    .all(|t| k.tasks.get(&t.name).is_some_and(|e| e.0 == t.fingerprint))
        });
        if same {
            return;
        }
        let mut next = match known.as_deref() {
            Some(k) => Announced {
                program: k.program.clone(),
                complete: k.complete && hello.tasks_complete,
                tasks: k.tasks.clone(),
            },
            None => Announced {
                program: hello.program.clone(),
                complete: hello.tasks_complete,
                tasks: HashMap::new(),
            },
        };
        for t in &hello.tasks {
            next.tasks
                .entry(t.name.clone())
                .or_insert_with(|| (t.fingerprint, t.input_type.clone()));
        }
        *known = Some(Arc::new(next));
    }

    /// `Err` if the workers said which tasks they have and none can run
    /// task `name` of type `input_type` (fingerprint `fp`).
    pub(crate) fn check(
        &self,
        name: &str,
        fp: u64,
        input_type: &str,
        bundled: bool,
    ) -> Result<(), Unrunnable> {
        let Some(known) = lock(&self.known).clone() else {
            return Ok(());
        };
        let listed = || {
            let mut names: Vec<String> = known.tasks.keys().cloned().collect();
            names.sort_unstable();
            names
        };
        match known.tasks.get(name) {
            Some((worker_fp, _)) if *worker_fp == fp => Ok(()),
            Some((_, worker_type)) if worker_type != input_type => Err(Unrunnable {
                program: known.program.clone(),
                known: listed(),
                reason: format!(
                    "two task types share the name `{name}`: the worker program `{}` runs \
                     `{worker_type}` under it, and this is `{input_type}`; give one of them \
                     another NAME (for a #[procpool::task] fn: #[procpool::task(name = \"...\")])",
                    known.program
                ),
            }),
            Some((_, worker_type)) => Err(Unrunnable {
                program: known.program.clone(),
                known: listed(),
                reason: format!(
                    "the worker program `{}` was built from another definition of \
                     `{worker_type}` (its input or output type differs): rebuild the parent \
                     and the worker from the same source",
                    known.program
                ),
            }),
            None if !known.complete => Ok(()),
            None => {
                let names = listed();
                let mut reason = format!(
                    "the worker program `{}` knows {} task{}",
                    known.program,
                    names.len(),
                    if names.len() == 1 { "" } else { "s" }
                );
                if !names.is_empty() {
                    reason.push_str(": ");
                    let shown: Vec<String> = names
                        .iter()
                        .take(LISTED)
                        .map(|n| format!("`{n}`"))
                        .collect();
                    reason.push_str(&shown.join(", "));
                    if names.len() > LISTED {
                        reason.push_str(&format!(" and {} more", names.len() - LISTED));
                    }
                }
                if bundled {
                    reason.push_str(
                        ". The bundled `procpool-worker` runs only the built-in tasks of \
                         `procpool-tasks`: to run your own, make your program its own worker \
                         (call `procpool::worker::run_if_worker(procpool::Registry::collected())` \
                         first thing in `main`, and use `WorkerCommand::current_exe()`)",
                    );
                } else {
                    reason.push_str(
                        ". Define it with #[procpool::task] in the program the workers run \
                         (and serve `procpool::Registry::collected()` there), or register it \
                         in that program's Registry",
                    );
                }
                Err(Unrunnable {
                    program: known.program.clone(),
                    known: names,
                    reason,
                })
            }
        }
    }
}
