//! Child processes that never outlive their owner.
//!
//! Every process is killed (SIGKILL, by pid) and reaped when its handle is
//! dropped, panics included. On Linux the child also gets `PR_SET_PDEATHSIG`, so
//! it dies with the thread that started it even if the owner is SIGKILLed and no
//! destructor runs.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Why a process could not be started or signalled.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program could not be started.
    #[error("cannot start {program}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A signal could not be delivered.
    #[error("cannot send signal {signal} to pid {pid}")]
    Signal {
        /// The pid.
        pid: u32,
        /// The signal number.
        signal: i32,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A running child process, killed on drop.
#[derive(Debug)]
pub struct ManagedProcess {
    /// What it is, for messages.
    label: String,
    /// The child, `None` once it was killed and reaped.
    child: Option<Child>,
}

impl ManagedProcess {
    /// Start `command` with stdout/stderr appended to `log` (created if needed).
    pub fn spawn(
        label: impl Into<String>,
        mut command: Command,
        log: &Path,
    ) -> Result<Self, ProcessError> {
        let label = label.into();
        let program = format!("{command:?}");
        let open_log = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
        };
        let spawn_error = |source| ProcessError::Spawn {
            program: program.clone(),
            source,
        };
        command
            .stdin(Stdio::null())
            .stdout(open_log().map_err(spawn_error)?)
            .stderr(open_log().map_err(spawn_error)?);
        die_with_parent(&mut command);
        let child = command.spawn().map_err(spawn_error)?;
        Ok(Self {
            label,
            child: Some(child),
        })
    }

    /// The process id (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// What it is.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Send a signal (e.g. `libc::SIGSTOP`) without reaping.
    pub fn signal(&self, signal: i32) -> Result<(), ProcessError> {
        let pid = self.pid();
        if pid == 0 {
            return Ok(());
        }
        let pid_t = libc::pid_t::try_from(pid).unwrap_or(libc::pid_t::MAX);
        if send_signal(pid_t, signal) {
            Ok(())
        } else {
            Err(ProcessError::Signal {
                pid,
                signal,
                source: std::io::Error::last_os_error(),
            })
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`; reaps it.
    pub fn terminate(&mut self, grace: std::time::Duration) {
        if self.child.is_none() {
            return;
        }
        let _ = self.signal(libc::SIGCONT);
        let _ = self.signal(libc::SIGTERM);
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Some(child) = &mut self.child
                && matches!(child.try_wait(), Ok(Some(_)))
            {
                self.child = None;
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.kill();
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[allow(unsafe_code)]
fn send_signal(pid: libc::pid_t, signal: i32) -> bool {
    // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped, so the
    // pid cannot have been reused); it touches no memory of ours.
    unsafe { libc::kill(pid, signal) == 0 }
}

#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only calls
    // prctl(2), which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Directories to remove when this process exits.
static REMOVE_AT_EXIT: std::sync::Mutex<Vec<std::path::PathBuf>> =
    std::sync::Mutex::new(Vec::new());

/// Remove `dir` (and what is in it) when the process exits normally: for
/// directories held by statics, which are never dropped.
#[allow(unsafe_code)]
pub fn remove_at_exit(dir: std::path::PathBuf) {
    extern "C" fn remove_all() {
        let dirs = REMOVE_AT_EXIT.lock().unwrap_or_else(|e| e.into_inner());
        for dir in dirs.iter() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    let mut dirs = REMOVE_AT_EXIT.lock().unwrap_or_else(|e| e.into_inner());
    if dirs.is_empty() {
        // SAFETY: atexit(3) only stores the pointer of a function that lives as
        // long as the program; the handler takes the lock and touches only
        // the file system.
        unsafe {
            libc::atexit(remove_all);
        }
    }
    dirs.push(dir);
}
