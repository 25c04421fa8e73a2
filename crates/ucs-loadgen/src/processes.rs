//! Child processes of a run: started on loopback, waited for, measured,
//! and always killed when their handle drops, so nothing outlives a run.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use ucs_grpc::pb;
use ucs_grpc::pb::auth_client::AuthClient;
use ucs_grpc::pb::plugins_client::PluginsClient;

/// How long a child may take to answer its first call.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The admin password of every `ucs serve` the suite starts.
pub(crate) const ADMIN_PASSWORD: &str = "bench-admin-password";

/// A child process, killed on drop.
pub(crate) struct ChildProcess {
    /// What it is, for messages.
    name: String,
    /// The process.
    child: Child,
    /// Where its stdout and stderr go.
    log: PathBuf,
    /// `http://127.0.0.1:PORT` for servers.
    pub(crate) url: String,
}

impl ChildProcess {
    /// Spawns `command` with output to `log`; `url` is where it will listen.
    pub(crate) fn spawn(
        name: &str,
        mut command: Command,
        log: PathBuf,
        url: String,
    ) -> anyhow::Result<Self> {
        let out = File::create(&log).with_context(|| format!("log file {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(ChildProcess {
            name: name.to_owned(),
            child,
            log,
            url,
        })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails, with the child's log, if it has exited.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!(
                "{} exited with {status}; its log:\n{}",
                self.name,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Resident memory now, KiB, from `/proc/PID/status` (VmRSS).
    pub(crate) fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib(self.pid())
    }

    /// Polls `ready` until it succeeds, the child dies, or the start timeout.
    pub(crate) async fn wait_ready<T, F, Fut>(&mut self, mut ready: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.check_alive()?;
            match ready().await {
                Ok(value) => return Ok(value),
                Err(err) if Instant::now() >= deadline => {
                    anyhow::bail!("{} not ready within {START_TIMEOUT:?}: {err}", self.name)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        // Killing a process that already exited fails harmlessly.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port: bind port 0, read it, let it go.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// VmRSS of process `pid`, KiB.
pub(crate) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    kib_field(&status, "VmRSS:").context("no VmRSS in /proc/PID/status")
}

/// The value of a `NAME:   1234 kB` line of a `/proc` file, in KiB.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Process `pid`'s proportional set size (each shared page divided among
/// the processes mapping it) and its private memory, in KiB, from
/// `/proc/PID/smaps_rollup`. RSS counts every page a plugin host shares with
/// the server and the other hosts (the `ucs` binary, libpython) in full;
/// these two say what one more host costs.
pub(crate) fn pss_and_private_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let field = |name: &str| {
        kib_field(&rollup, name).with_context(|| format!("no {name} in /proc/PID/smaps_rollup"))
    };
    Ok((
        field("Pss:")?,
        field("Private_Clean:")? + field("Private_Dirty:")?,
    ))
}

/// Where a benchmarked server runs its plugins (SPEC I1): every figure
/// names its mode, since the server's default may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isolation {
    /// `--isolation=inprocess`.
    InProcess,
    /// `--isolation=process`.
    Process,
}

impl Isolation {
    /// The flag's value.
    fn flag(self) -> &'static str {
        match self {
            Isolation::InProcess => "inprocess",
            Isolation::Process => "process",
        }
    }
}

/// Starts `ucs serve --demo` over `plugins_dir` on a free loopback port.
pub(crate) fn start_ucs(
    ucs_binary: &Path,
    work_dir: &Path,
    name: &str,
    plugins_dir: &Path,
    isolation: Isolation,
) -> anyhow::Result<ChildProcess> {
    let port = free_port()?;
    let data_dir = work_dir.join(format!("{name}-data"));
    let mut command = Command::new(ucs_binary);
    command
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--plugins-dir")
        .arg(plugins_dir)
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--demo")
        .arg(format!("--isolation={}", isolation.flag()))
        .env("UCS_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("RUST_LOG", "warn")
        .env_remove("UCS_SID");
    ChildProcess::spawn(
        name,
        command,
        work_dir.join(format!("{name}.log")),
        format!("http://127.0.0.1:{port}"),
    )
}

/// Logs in as admin once the server answers and its plugins are loaded
/// (it serves before slow ones are, I4); returns the sid.
pub(crate) async fn login_when_ready(server: &mut ChildProcess) -> anyhow::Result<String> {
    let url = server.url.clone();
    server
        .wait_ready(|| {
            let url = url.clone();
            async move {
                let mut auth = AuthClient::connect(url.clone()).await?;
                let sid = auth
                    .login(pb::LoginRequest {
                        username: "admin".to_owned(),
                        password: ADMIN_PASSWORD.to_owned(),
                    })
                    .await?
                    .into_inner()
                    .sid;
                let listed = PluginsClient::connect(url)
                    .await?
                    .list(pb::ListPluginsRequest { sid: sid.clone() })
                    .await?
                    .into_inner()
                    .plugins;
                let starting = listed
                    .iter()
                    .any(|info| info.state() == pb::PluginState::Starting);
                anyhow::ensure!(!starting, "plugins still starting");
                Ok(sid)
            }
        })
        .await
}
