//! What the soak must not leak, read from `/proc` and the temp directory:
//! file descriptors, threads, child processes, `procpool-*` temp entries
//! of this process, and resident memory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The resources of this process at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Open descriptors: number → what it points at.
    pub fds: BTreeMap<u32, String>,
    /// Threads: id → name.
    pub threads: BTreeMap<u32, String>,
    /// Child processes (zombies too): pid → name and state.
    pub children: BTreeMap<u32, String>,
    /// Entries named `procpool-*` in the temp directory that carry this
    /// process's id (`procpool-PID-…`).
    pub temp: BTreeSet<String>,
    /// Resident set size, bytes.
    pub rss: u64,
}

fn read_dir_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The parenthesised name and the fields after it in `/proc/PID/stat`.
fn stat_fields(path: &Path) -> Option<(String, Vec<String>)> {
    let s = std::fs::read_to_string(path).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let name = s.get(open + 1..close)?.to_owned();
    let rest = s.get(close + 1..)?;
    Some((name, rest.split_whitespace().map(str::to_owned).collect()))
}

/// Resident set size of this process, bytes (`/proc/self/statm`).
pub fn rss() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Reads the resources of this process now.
pub fn snapshot() -> Snapshot {
    let me = std::process::id();
    let fds = read_dir_names(Path::new("/proc/self/fd"))
        .into_iter()
        .filter_map(|n| {
            let fd: u32 = n.parse().ok()?;
            let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "?".into());
            Some((fd, target))
        })
        .collect();
    let threads = read_dir_names(Path::new("/proc/self/task"))
        .into_iter()
        .filter_map(|n| {
            let tid: u32 = n.parse().ok()?;
            let name = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
                .map(|s| s.trim().to_owned())
                .unwrap_or_default();
            Some((tid, name))
        })
        .collect();
    let children = read_dir_names(Path::new("/proc"))
        .into_iter()
        .filter_map(|n| {
            let pid: u32 = n.parse().ok()?;
            let (name, f) = stat_fields(&Path::new("/proc").join(&n).join("stat"))?;
            let ppid: u32 = f.get(1)?.parse().ok()?;
            (ppid == me).then(|| (pid, format!("{name} (state {})", f[0])))
        })
        .collect();
    let mine = format!("-{me}-");
    let temp = read_dir_names(&std::env::temp_dir())
        .into_iter()
        .filter(|n| n.starts_with("procpool-") && format!("{}-", &n[8..]).contains(&mine))
        .collect();
    Snapshot {
        fds,
        threads,
        children,
        temp,
        rss: rss(),
    }
}

/// What `after` holds beyond `before`, one line per kind of leak (empty:
/// nothing leaked). Descriptor numbers are reused, so descriptors count:
/// more than before is a leak, and the new ones are listed.
pub fn leaks(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    if after.fds.len() > before.fds.len() {
        let new: Vec<String> = after
            .fds
            .iter()
            .filter(|(fd, t)| before.fds.get(fd) != Some(t))
            .map(|(fd, t)| format!("{fd} → {t}"))
            .collect();
        out.push(format!(
            "file descriptors: {} before, {} after; new: {}",
            before.fds.len(),
            after.fds.len(),
            new.join(", ")
        ));
    }
    // Thread ids are not reused soon (they count up to pid_max): a thread
    // that was not there before is new, whatever else ended meanwhile.
    let new: Vec<String> = after
        .threads
        .iter()
        .filter(|(tid, _)| !before.threads.contains_key(tid))
        .map(|(tid, name)| format!("{tid} `{name}`"))
        .collect();
    if !new.is_empty() {
        out.push(format!(
            "threads: {} before, {} after; new: {}",
            before.threads.len(),
            after.threads.len(),
            new.join(", ")
        ));
    }
    let kids: Vec<String> = after
        .children
        .iter()
        .filter(|(pid, _)| !before.children.contains_key(pid))
        .map(|(pid, what)| format!("{pid} {what}"))
        .collect();
    if !kids.is_empty() {
        out.push(format!("child processes: {}", kids.join(", ")));
    }
    let temp: Vec<&str> = after
        .temp
        .difference(&before.temp)
        .map(String::as_str)
        .collect();
    if !temp.is_empty() {
        out.push(format!("temp entries: {}", temp.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two tests read this process's descriptors: one at a time.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn leaks_names_what_grew() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let before = snapshot();
        assert!(leaks(&before, &before).is_empty());
        assert!(before.fds.len() >= 3 && !before.threads.is_empty() && before.rss > 0);

        let mut after = before.clone();
        after.fds.insert(9999, "socket:[1]".into());
        after.threads.insert(1, "procpool-x".into());
        after.children.insert(2, "procpool (state Z)".into());
        after.temp.insert("procpool-1-a".into());
        let found = leaks(&before, &after);
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found[0].contains("9999 → socket:[1]"), "{found:?}");
        assert!(found[1].contains("`procpool-x`"), "{found:?}");
        assert!(found[2].contains("state Z"), "{found:?}");
        assert!(found[3].contains("procpool-1-a"), "{found:?}");
    }

    #[test]
    fn a_real_leak_is_seen() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let before = snapshot();
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel::<()>();
        let t = std::thread::Builder::new()
            .name("leaky".into())
            .spawn(move || {
                let _ = ready_tx.send(());
                rx.recv()
            })
            .unwrap();
        // The thread names itself once it runs: the snapshot waits for that
        // (it once saw the thread under its parent's name).
        ready.recv().unwrap();
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let dir = std::env::temp_dir().join(format!("procpool-{}-probe-test", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let found = leaks(&before, &snapshot());
        // Clean up before asserting.
        drop(file);
        drop(tx);
        let _ = t.join();
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir(&dir);
        let text = found.join("\n");
        assert!(text.contains("file descriptors"), "{text}");
        assert!(text.contains("`leaky`"), "{text}");
        assert!(text.contains("sleep"), "{text}");
        assert!(text.contains("probe-test"), "{text}");
    }
}
