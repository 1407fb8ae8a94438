//! Who made a temporary file or directory, recorded in its name, so that a later run can tell
//! the leftovers of a process that is gone (SIGKILL, a power cut) from the work of one that
//! still runs.
//!
//! A name records `<pid>-<start>@<host>_` ([`Owner::tag`]), where `start` is when the process
//! started (clock ticks after boot, as `/proc/<pid>/stat` gives it; 0 where unknown), so that a
//! reused pid is not taken for the owner.

use std::fmt;
use std::io;
use std::sync::OnceLock;

/// The process that writes a temporary file or directory, as its name records it .
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The process id.
    pub pid: u32,
    /// When the process started, in clock ticks after boot; 0 where unknown.
    pub start: u64,
    /// The host name, with characters other than ASCII letters, digits, `-` and `.` as `-`.
    pub host: String,
}

impl Owner {
    /// This process.
    pub fn current() -> &'static Owner {
        static CURRENT: OnceLock<Owner> = OnceLock::new();
        CURRENT.get_or_init(|| {
            let pid = std::process::id();
            Owner {
                pid,
                start: start_time(pid).unwrap_or(0),
                host: host_name(),
            }
        })
    }

    /// The owner as it goes into a name: `<pid>-<start>@<host>_`.
    pub fn tag(&self) -> String {
        format!("{}-{}@{}_", self.pid, self.start, self.host)
    }

    /// Reads a [`tag`](Self::tag) at the start of `text`; returns the owner and what follows.
    pub fn parse(text: &str) -> Option<(Owner, &str)> {
        let (tag, rest) = text.split_once('_')?;
        let (process, host) = tag.split_once('@')?;
        let (pid, start) = process.split_once('-')?;
        let valid_host = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        let owner = Owner {
            pid: pid.parse().ok()?,
            start: start.parse().ok()?,
            host: host.to_string(),
        };
        valid_host.then_some((owner, rest))
    }

    /// Whether the owner has ended: it ran on this host, and no process has its pid now, or
    /// the one that has it started at another time (the pid was reused). Owners on other
    /// hosts are never gone: this host cannot tell.
    pub fn is_gone(&self) -> bool {
        if self.host != Owner::current().host {
            return false;
        }
        let Some(pid) = i32::try_from(self.pid).ok().filter(|pid| *pid > 0) else {
            return false;
        };
        // SAFETY: signal 0 sends nothing; it only checks that the process exists.
        let exists = unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !exists {
            return true;
        }
        match start_time(self.pid) {
            Some(start) => self.start != 0 && start != self.start,
            None => false,
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} on {}", self.pid, self.host)
    }
}

/// When process `pid` started, in clock ticks after boot, where `/proc` tells.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22; the command name before it (field 2, in parentheses) may hold spaces.
    let after_name = stat.rsplit_once(')')?.1;
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// This host's name, as [`Owner::host`] holds it.
fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most `buffer.len()` bytes into the buffer.
    let name = if unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) } == 0 {
        let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
        String::from_utf8_lossy(&buffer[..end])
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    } else {
        String::new()
    };
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}
