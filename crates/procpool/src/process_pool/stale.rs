//! Directories that pools killed before they could clean up left in the
//! temp dir (`procpool-PID-TAG`: an attach pool's socket and secret file),
//! and removing them when the next pool starts. Takes no lock.

use std::path::Path;

/// How a pool's directory in the temp dir is named: `procpool-PID-TAG`.
pub(super) const DIR_PREFIX: &str = "procpool-";
pub(super) const SECRET_FILE: &str = "secret";
pub(super) const SOCKET_FILE: &str = "pool.sock";

/// Removes what pools whose process is gone (SIGKILLed, say) left in `tmp`:
/// directories `procpool-PID-TAG` of this user, mode 0700, whose PID no
/// longer exists, holding nothing but a secret file and a socket. A live
/// pool's directory (its PID exists, whoever that is) and anything else are
/// never touched.
pub(crate) fn clean_stale_dirs(tmp: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    let me = nix::unistd::geteuid().as_raw();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, tag)| {
                let tag_ok = !tag.is_empty() && tag.bytes().all(|b| b.is_ascii_alphanumeric());
                pid.parse::<i32>().ok().filter(|&p| p > 0 && tag_ok)
            })
        else {
            continue;
        };
        // `symlink_metadata`: a link planted under that name is not followed.
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != me || meta.permissions().mode() & 0o777 != 0o700 {
            continue;
        }
        let gone = matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        );
        if !gone {
            continue;
        }
        let dir = e.path();
        let only_ours = std::fs::read_dir(&dir).is_ok_and(|inside| {
            inside
                .flatten()
                .all(|f| matches!(f.file_name().to_str(), Some(SECRET_FILE | SOCKET_FILE)))
        });
        if !only_ours {
            continue;
        }
        for f in [SECRET_FILE, SOCKET_FILE] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        match std::fs::remove_dir(&dir) {
            Ok(()) => tracing::info!(target: "procpool::pool",
                "removed {} left by pool process {pid}, which is gone", dir.display()),
            Err(e) => tracing::debug!(target: "procpool::pool",
                "cannot remove {}: {e}", dir.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::DirBuilderExt;

    fn make(dir: &Path, files: &[&str], mode: u32) {
        std::fs::DirBuilder::new().mode(mode).create(dir).unwrap();
        for f in files {
            std::fs::write(dir.join(f), "x").unwrap();
        }
    }

    #[test]
    fn only_dead_pools_own_directories_go() {
        let tmp = std::env::temp_dir().join(format!("procpool-stale-test-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        // A pid that existed and is gone.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let me = std::process::id();
        let dead_dir = tmp.join(format!("{DIR_PREFIX}{dead}-0a1b2c"));
        let crowded = tmp.join(format!("{DIR_PREFIX}{dead}-0a1b2d"));
        let open = tmp.join(format!("{DIR_PREFIX}{dead}-0a1b2e"));
        let live = tmp.join(format!("{DIR_PREFIX}{me}-0a1b2f"));
        let other = tmp.join(format!("{DIR_PREFIX}{dead}-not-hex"));
        make(&dead_dir, &[SECRET_FILE, SOCKET_FILE], 0o700);
        make(&crowded, &[SECRET_FILE, "notes.txt"], 0o700);
        make(&open, &[SECRET_FILE], 0o755);
        make(&live, &[SECRET_FILE], 0o700);
        make(&other, &[SECRET_FILE], 0o700);
        clean_stale_dirs(&tmp);
        assert!(!dead_dir.exists(), "a dead pool's directory stays");
        assert!(
            crowded.exists(),
            "a directory with other files is not ours to remove"
        );
        assert!(open.exists(), "a directory that is not 0700 is not ours");
        assert!(live.exists(), "a live pool's directory was removed");
        assert!(other.exists(), "a name that is not PID-TAG is not ours");
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
