//! One writer per run directory: [`RunLock`], a lock file `RUN/.lock` holding the owner's
//! process id.
//!
//! A second process that would write checkpoints into a directory another live process is
//! writing refuses to start ([`Error::RunLocked`], naming the directory and the owner's pid). A
//! lock left behind by a process that no longer exists (killed, or a second Ctrl-C) is stale: it
//! is detected by the pid and taken over. Within one process the lock is re-entrant, so that the
//! command-line tool can take it before writing `config.json` and the fit loop take it again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// The lock file's name inside a run directory.
pub const LOCK_FILE: &str = ".lock";

/// Run directories this process holds, with how many guards hold each.
static HELD: Mutex<Vec<(PathBuf, usize)>> = Mutex::new(Vec::new());

/// Holds a run directory's lock until dropped.
#[derive(Debug)]
pub struct RunLock {
    dir: PathBuf,
}

impl RunLock {
    /// Takes the lock of `dir` (created if missing).
    ///
    /// # Errors
    /// [`Error::RunLocked`] when another live process holds it; [`Error::Io`] when the
    /// directory or the lock file cannot be written.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            action: "creating",
            path: dir.to_path_buf(),
            source,
        })?;
        let key = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = held.iter_mut().find(|(d, _)| *d == key) {
            entry.1 += 1;
            return Ok(RunLock { dir: key });
        }
        let path = key.join(LOCK_FILE);
        let me = std::process::id();
        for _ in 0..3 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(format!("{me}\n").as_bytes())
                        .and_then(|_| f.sync_all())
                        .map_err(|source| Error::Io {
                            action: "writing",
                            path: path.clone(),
                            source,
                        })?;
                    held.push((key.clone(), 1));
                    return Ok(RunLock { dir: key });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|t| t.trim().parse::<u32>().ok());
                    match owner {
                        Some(pid) if pid != me && process_alive(pid) => {
                            return Err(Error::RunLocked { dir: key, pid });
                        }
                        // stale (its process is gone), ours from an earlier run of this
                        // process, or unreadable: take it over
                        _ => {
                            let _ = std::fs::remove_file(&path);
                        }
                    }
                }
                Err(source) => {
                    return Err(Error::Io {
                        action: "creating",
                        path,
                        source,
                    });
                }
            }
        }
        Err(Error::Io {
            action: "creating",
            path,
            source: std::io::Error::other("the lock file keeps reappearing"),
        })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = held.iter().position(|(d, _)| *d == self.dir) {
            held[i].1 -= 1;
            if held[i].1 == 0 {
                held.remove(i);
                let _ = std::fs::remove_file(self.dir.join(LOCK_FILE));
            }
        }
    }
}

/// Whether a process with this id exists (Linux: `/proc/PID`; elsewhere every lock is
/// assumed live, and a stale one must be removed by hand, as the error message says).
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_owner_blocks_a_stale_one_is_taken_over_and_ours_nests() {
        let tmp = std::env::temp_dir().join(format!("varsparse-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap();
        // pid 1 is alive on Linux (init)
        std::fs::write(tmp.join(LOCK_FILE), "1\n").unwrap();
        if cfg!(target_os = "linux") {
            let e = RunLock::acquire(&tmp).unwrap_err();
            assert!(matches!(e, Error::RunLocked { pid: 1, .. }), "{e}");
        }
        // a pid that cannot exist: stale
        std::fs::write(tmp.join(LOCK_FILE), format!("{}\n", u32::MAX)).unwrap();
        let a = RunLock::acquire(&tmp).unwrap();
        let text = std::fs::read_to_string(tmp.join(LOCK_FILE)).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        let b = RunLock::acquire(&tmp).unwrap();
        drop(a);
        assert!(
            tmp.join(LOCK_FILE).exists(),
            "the second guard still holds it"
        );
        drop(b);
        assert!(!tmp.join(LOCK_FILE).exists());
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
