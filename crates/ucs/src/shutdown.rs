//! The shutdown deadline that holds whatever plugins do (SPEC L3, I7;
//! issue 15 item 10).
//!
//! The orderly shutdown in `serve.rs` needs the plugins' cooperation: it
//! calls their `stop()` and, in-process, needs the GIL for that and for
//! what follows. A plugin spinning in C code (`sum(range(10**10))`, a
//! catastrophic regex) holds the GIL and never lets go. So the first
//! SIGTERM, SIGINT or SIGHUP also arms a [`Watchdog`]: a plain thread that
//! takes neither the GIL nor any lock a plugin thread could hold. At the
//! deadline, or at once on a second signal, it logs which plugins were not
//! stopped, kills every plugin host (process group and all) and ends the
//! process with `_exit`, status [`EXIT_CUT_SHORT`], so that not even an
//! `atexit` handler or a stdio lock a plugin holds can keep it alive.
//!
//! Nothing acknowledged is lost by that: the store writes every change
//! through SQLite with `synchronous=FULL` before the call that made it
//! returns, and a transaction `_exit` interrupts was never acknowledged and
//! is rolled back at the next open (`ucs-store`).

use std::sync::mpsc;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ucs_loader::PluginHost;

/// The exit status of a shutdown the watchdog ended: at the deadline, or by
/// a second signal, with plugins not stopped.
pub(crate) const EXIT_CUT_SHORT: i32 = 3;

/// Ends the process at the shutdown deadline, or at a second signal, unless
/// the process ended first. Nothing disarms it, dropping included: the exit
/// of a finished shutdown may still hang (a plugin thread holding a stdio
/// lock that `exit` flushes), and the deadline holds for that too.
#[derive(Clone)]
pub(crate) struct Watchdog {
    /// A second signal's name; the thread waits on the other end.
    second_signal: mpsc::Sender<&'static str>,
}

impl Watchdog {
    /// Starts the watchdog thread for a shutdown that began now with the
    /// signal `first`, to end by `deadline`. `host` names the plugins not
    /// stopped in its last words; the watchdog does not keep it alive.
    pub(crate) fn arm(
        first: &'static str,
        deadline: Duration,
        host: Option<&Arc<PluginHost>>,
    ) -> std::io::Result<Watchdog> {
        let (second_signal, signalled) = mpsc::channel();
        let host = host.map(Arc::downgrade);
        let ends_at = Instant::now() + deadline;
        std::thread::Builder::new()
            .name("ucs-shutdown-watchdog".to_owned())
            .spawn(move || {
                let why = match signalled
                    .recv_timeout(ends_at.saturating_duration_since(Instant::now()))
                {
                    Ok(second) => format!("{second} received during shutdown (after {first})"),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        format!("the shutdown deadline of {deadline:?} after {first} passed")
                    }
                    // Every sender was dropped: no second signal can come,
                    // and the deadline still holds.
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        std::thread::sleep(ends_at.saturating_duration_since(Instant::now()));
                        format!("the shutdown deadline of {deadline:?} after {first} passed")
                    }
                };
                exit_now(&why, host.as_ref());
            })?;
        Ok(Watchdog { second_signal })
    }

    /// A second signal arrived: end now.
    pub(crate) fn second_signal(&self, name: &'static str) {
        // The thread is gone only if it is already ending the process.
        let _ = self.second_signal.send(name);
    }
}

/// Logs why and what was not stopped, kills the plugin hosts and ends the
/// process without running `atexit` handlers or flushing stdio.
fn exit_now(why: &str, host: Option<&Weak<PluginHost>>) -> ! {
    let not_stopped = match host.and_then(Weak::upgrade) {
        Some(host) => not_stopped(&host),
        None => "none".to_owned(),
    };
    let hosts = kill_plugin_hosts();
    // The log writes straight to a file descriptor, with no lock a plugin
    // thread could hold (`serve::LogFile`).
    tracing::error!(
        "{why}; exiting now with status {EXIT_CUT_SHORT}. Plugins not stopped: {not_stopped}; \
         plugin hosts killed: {hosts}"
    );
    // SAFETY: `_exit` ends the process at once; nothing after it runs, and
    // it is async-signal-safe, so no lock any other thread holds matters.
    unsafe { libc::_exit(EXIT_CUT_SHORT) }
}

/// The plugins not stopped, as the loader lists them without waiting for a
/// lock; a few tries, since the lock is only ever held briefly by a thread
/// that is still running.
fn not_stopped(host: &PluginHost) -> String {
    for _ in 0..20 {
        if let Some(names) = host.not_stopped_now() {
            return if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            };
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    "unknown (the loader was busy)".to_owned()
}

/// Kills every child of this process that leads a process group of its
/// own (the plugin hosts, `ucs-link`'s `spawn_linked`), with the group, so
/// what a plugin started goes too. Read from `/proc`, not from the loader:
/// it holds no lock and also finds a host just being spawned or restarted.
/// Returns their pids, or `none`.
fn kill_plugin_hosts() -> String {
    let me = std::process::id();
    let mut killed = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return "none (no /proc)".to_owned();
    };
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((parent, group)) = parent_and_group(&stat)
            && parent == me
            && i32::try_from(group).is_ok_and(|group| group == pid)
        {
            // SAFETY: killpg only sends a signal; a group already gone
            // gives ESRCH, which is fine.
            unsafe {
                libc::killpg(pid, libc::SIGKILL);
            }
            killed.push(pid.to_string());
        }
    }
    if killed.is_empty() {
        "none".to_owned()
    } else {
        killed.join(", ")
    }
}

/// The parent pid and process group of a `/proc/PID/stat` line. The command
/// name (field 2) is in parentheses and may hold spaces or `)`, so fields
/// are counted after its last `)`.
fn parent_and_group(stat: &str) -> Option<(u32, u32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let _state = fields.next()?;
    let parent = fields.next()?.parse().ok()?;
    let group = fields.next()?.parse().ok()?;
    Some((parent, group))
}

#[cfg(test)]
mod tests {
    use super::parent_and_group;

    #[test]
    fn the_parent_and_group_are_read_after_the_command_name() {
        assert_eq!(
            parent_and_group("4242 (ucs plugin) host)) S 17 4242 17 0 -1"),
            Some((17, 4242))
        );
        assert_eq!(parent_and_group("garbage"), None);
    }
}
