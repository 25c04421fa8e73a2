//! Starts the real `ucs` binary for end-to-end tests and talks to it with
//! tonic clients.
//!
//! ```ignore
//! let server = Server::builder()
//!     .demo()
//!     .plugin("example.py", "UCS_PLUGIN = 'Example'\nclass Example: ...")
//!     .start()
//!     .await;
//! let sid = server.admin_sid().await;
//! ```
//!
//! Each server gets its own temporary plugins and data directories and a
//! free loopback port; it is killed when the [`Server`] is dropped. Its log
//! (stdout and stderr) goes to a file that [`Server::log`] reads, and every
//! harness panic includes it.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::net::TcpListener as StdTcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;
use tonic::Status;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use ucs_grpc::pb;
use ucs_grpc::pb::api_client::ApiClient;
use ucs_grpc::pb::auth_client::AuthClient;
use ucs_grpc::pb::events_client::EventsClient;
use ucs_grpc::pb::plugins_client::PluginsClient;

/// The password of user 1, `admin`, in every test server.
pub(crate) const ADMIN_PASSWORD: &str = "admin-password-1";
/// The password of the `--demo` agents alice, bob and carol.
pub(crate) const DEMO_PASSWORD: &str = "password1";
/// How long a server may take to report SERVING (a cold debug build that
/// starts Python and loads plugins is slow on a 2-core machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The path of the `ucs` binary cargo built for these tests.
pub(crate) fn ucs_binary() -> &'static str {
    env!("CARGO_BIN_EXE_ucs")
}

/// What to start a server with.
#[derive(Default)]
pub(crate) struct ServerBuilder {
    /// Plugin files to write before the server starts: name and source.
    plugins: Vec<(String, String)>,
    /// Whether to pass `--demo`.
    demo: bool,
    /// Extra `ucs serve` arguments.
    args: Vec<String>,
    /// Extra environment variables.
    env: Vec<(String, String)>,
    /// Serve TLS with this PEM certificate and key; clients trust the
    /// certificate itself unless `tls_ca` says otherwise.
    tls: Option<(String, String)>,
    /// The CA the harness's clients trust, when it is not the certificate.
    tls_ca: Option<String>,
    /// A data directory to use instead of a fresh one, e.g. to restart on
    /// the state a previous server left.
    data_dir: Option<PathBuf>,
    /// Whether `start` returns as soon as gRPC serves, before the plugins
    /// found at start are loaded (I4).
    serving_only: bool,
}

impl ServerBuilder {
    /// Writes `file_name` (e.g. `example.py`) with `source` into the plugins
    /// directory before the server starts.
    pub(crate) fn plugin(mut self, file_name: &str, source: &str) -> Self {
        self.plugins.push((file_name.to_owned(), source.to_owned()));
        self
    }

    /// Copies every plugin of the repository's `plugins/` (the four
    /// documented examples), in file-name order.
    pub(crate) fn example_plugins(mut self) -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .expect("plugins/ exists")
            .map(|entry| entry.expect("dir entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "py"))
            .collect();
        files.sort();
        for path in files {
            let name = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            let source = std::fs::read_to_string(&path).expect("plugin source");
            self = self.plugin(&name, &source);
        }
        self
    }

    /// Starts with `--demo`: agents alice, bob and carol.
    pub(crate) fn demo(mut self) -> Self {
        self.demo = true;
        self
    }

    /// Passes one more argument to `ucs serve`.
    pub(crate) fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    /// Sets an environment variable for the server, e.g. `RUST_LOG`.
    pub(crate) fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Serves TLS with `cert_pem` and `key_pem` (`--tls-cert`, `--tls-key`);
    /// the URL becomes `https://localhost:PORT` and clients trust `cert_pem`.
    pub(crate) fn tls(mut self, cert_pem: &str, key_pem: &str) -> Self {
        self.tls = Some((cert_pem.to_owned(), key_pem.to_owned()));
        self
    }

    /// The harness's clients trust `ca_pem` (the CA that signed the
    /// [`ServerBuilder::tls`] certificate) instead of the certificate.
    pub(crate) fn trusting(mut self, ca_pem: &str) -> Self {
        self.tls_ca = Some(ca_pem.to_owned());
        self
    }

    /// Uses `dir` as the data directory instead of a fresh one.
    pub(crate) fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    /// `--isolation=MODE` from `UCS_TEST_ISOLATION`, unless the test chose a
    /// mode itself: the example-plugin and fault suites run in both modes
    /// (SPEC I1).
    fn isolation_under_test(&self) -> Option<String> {
        let mode = std::env::var("UCS_TEST_ISOLATION").ok()?;
        let chosen = self.args.iter().any(|arg| arg.starts_with("--isolation"));
        (!chosen).then(|| format!("--isolation={mode}"))
    }

    /// `start` returns once gRPC serves, not once the plugins are loaded.
    pub(crate) fn serving_only(mut self) -> Self {
        self.serving_only = true;
        self
    }

    /// Starts the server and waits until its health service says SERVING
    /// and, unless [`ServerBuilder::serving_only`], its plugins are loaded.
    pub(crate) async fn start(self) -> Server {
        let root = tempfile::tempdir().expect("temp dir");
        let plugins_dir = root.path().join("plugins");
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| root.path().join("data"));
        std::fs::create_dir(&plugins_dir).expect("plugins dir");
        for (file_name, source) in &self.plugins {
            std::fs::write(plugins_dir.join(file_name), source).expect("plugin file");
        }
        let log_path = root.path().join("server.log");
        let mut root = Some(root);
        // A port from `free_port` may be taken by another test's server
        // before this one binds it: that server exits at once saying so,
        // and it is started again on another port.
        let server = loop {
            let dir = root.take().expect("the root directory");
            let log = std::fs::File::create(&log_path).expect("log file");
            let port = free_port();
            let address = format!("127.0.0.1:{port}");

            let mut command = Command::new(ucs_binary());
            command
                .arg("serve")
                .arg("--listen")
                .arg(&address)
                .arg("--plugins-dir")
                .arg(&plugins_dir)
                .arg("--data-dir")
                .arg(&data_dir)
                .args(self.demo.then_some("--demo"))
                .args(self.isolation_under_test())
                .args(&self.args)
                .env("UCS_ADMIN_PASSWORD", ADMIN_PASSWORD)
                .env_remove("UCS_SID")
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log);
            let mut url = format!("http://{address}");
            if let Some((cert, key)) = &self.tls {
                let (cert_path, key_path) =
                    (dir.path().join("cert.pem"), dir.path().join("key.pem"));
                std::fs::write(&cert_path, cert).expect("cert file");
                std::fs::write(&key_path, key).expect("key file");
                command
                    .arg("--tls-cert")
                    .arg(&cert_path)
                    .arg("--tls-key")
                    .arg(&key_path);
                url = format!("https://localhost:{port}");
            }
            if !self.env.iter().any(|(key, _)| key == "RUST_LOG") {
                command.env("RUST_LOG", "info");
            }
            let child = command.spawn().expect("spawn ucs serve");
            let mut server = Server {
                child,
                url,
                tls_ca: self
                    .tls_ca
                    .clone()
                    .or(self.tls.as_ref().map(|(cert, _)| cert.clone())),
                channel: None,
                log_path: log_path.clone(),
                plugins_dir: plugins_dir.clone(),
                _root: Some(dir),
            };
            if server.wait_until_serving().await {
                break server;
            }
            root = server._root.take();
        };
        if !self.serving_only {
            server.wait_for_start_up().await;
        }
        server
    }
}

/// `GET path` at `address` with a plain HTTP/1.1 request; the whole
/// response, status line and headers included. Blocking: call it from
/// `spawn_blocking` in async tests.
pub(crate) fn http_get(address: &str, path: &str) -> String {
    http_request(address, path, "")
}

/// `http_get` with `Accept: accept`.
pub(crate) fn http_get_accepting(address: &str, path: &str, accept: &str) -> String {
    http_request(address, path, &format!("Accept: {accept}\r\n"))
}

fn http_request(address: &str, path: &str, headers: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connect over HTTP");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
}

/// Whether `tool` runs here (`tool --version`). Under CI (`CI` set), where
/// `.ci/run` installs it from `package`, a missing tool fails the test
/// instead of skipping it, so a green CI has run it.
pub(crate) fn installed(tool: &str, package: &str) -> bool {
    let runs = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !runs {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is missing; .ci/run installs it with Debian's {package}"
        );
        eprintln!("{tool} is not installed: skipped");
    }
    runs
}

/// A free loopback address for a second listener (`--metrics-listen`).
pub(crate) fn free_address() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A free loopback port: bind port 0, read the port, let it go. Another
/// process could take it in between; that is rare enough for tests.
fn free_port() -> u16 {
    let listener = StdTcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// A running `ucs serve`, killed on drop.
pub(crate) struct Server {
    /// The server process.
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub(crate) url: String,
    /// The certificate clients trust when the server serves TLS.
    pub(crate) tls_ca: Option<String>,
    /// Connected once the server is serving.
    channel: Option<Channel>,
    /// Where the server's stdout and stderr go.
    log_path: PathBuf,
    /// The plugins directory the server scans.
    plugins_dir: PathBuf,
    /// Owns the plugins and data directories and the log (`None` only
    /// while a start on a taken port is retried).
    _root: Option<TempDir>,
}

impl Server {
    /// What to start a server with.
    pub(crate) fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// A server with `--demo` agents and no plugins.
    pub(crate) async fn demo() -> Server {
        Self::builder().demo().start().await
    }

    /// Waits until this server's health service says SERVING and its own
    /// log says it serves (a health answer alone could come from another
    /// test's server that took the port first); `false` if it exited
    /// because the port was taken, to be started again on another.
    async fn wait_until_serving(&mut self) -> bool {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                if self.log().contains("Address already in use") {
                    return false;
                }
                panic!("ucs serve exited early with {status}; log:\n{}", self.log());
            }
            if !self.log().contains("serving gRPC") {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if Instant::now() >= deadline {
                    panic!(
                        "ucs serve did not serve within {START_TIMEOUT:?}; log:\n{}",
                        self.log()
                    );
                }
                continue;
            }
            if let Ok(channel) = self
                .endpoint()
                .connect_timeout(Duration::from_secs(1))
                .connect()
                .await
            {
                let health = HealthClient::new(channel.clone())
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await;
                if let Ok(response) = health
                    && response.into_inner().status() == ServingStatus::Serving
                {
                    self.channel = Some(channel);
                    return true;
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "ucs serve did not report SERVING within {START_TIMEOUT:?}; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the plugins found at start are loaded: the server serves
    /// before slow ones are up (I4), and most tests are about plugins.
    pub(crate) async fn wait_for_start_up(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.log().contains(ucs_loader::START_UP_DONE) {
            if Instant::now() >= deadline {
                panic!(
                    "the plugins found at start did not load within {START_TIMEOUT:?}; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// An endpoint for the server's URL, trusting its certificate if it
    /// serves TLS.
    pub(crate) fn endpoint(&self) -> Endpoint {
        let endpoint = Endpoint::from_shared(self.url.clone()).expect("url");
        match &self.tls_ca {
            Some(ca) => endpoint
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
                .expect("TLS config"),
            None => endpoint,
        }
    }

    /// Everything the server printed so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The plugins directory the server scans.
    pub(crate) fn plugins_dir(&self) -> &Path {
        &self.plugins_dir
    }

    /// Writes (or rewrites) a plugin file, e.g. before a reload.
    pub(crate) fn write_plugin(&self, file_name: &str, source: &str) {
        std::fs::write(self.plugins_dir.join(file_name), source).expect("plugin file");
    }

    /// A channel to the server.
    pub(crate) fn channel(&self) -> Channel {
        self.channel.clone().expect("connected while starting")
    }

    /// An `ucs.v1.Auth` client.
    pub(crate) fn auth(&self) -> AuthClient<Channel> {
        AuthClient::new(self.channel())
    }

    /// An `ucs.v1.Api` client.
    pub(crate) fn api(&self) -> ApiClient<Channel> {
        ApiClient::new(self.channel())
    }

    /// An `ucs.v1.Plugins` client.
    pub(crate) fn plugins(&self) -> PluginsClient<Channel> {
        PluginsClient::new(self.channel())
    }

    /// An `ucs.v1.Events` client.
    pub(crate) fn events(&self) -> EventsClient<Channel> {
        EventsClient::new(self.channel())
    }

    /// A health client.
    pub(crate) fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel())
    }

    /// Logs in and returns the sid; panics with the log if it fails.
    pub(crate) async fn login(&self, username: &str, password: &str) -> String {
        match self
            .auth()
            .login(pb::LoginRequest {
                username: username.to_owned(),
                password: password.to_owned(),
            })
            .await
        {
            Ok(response) => response.into_inner().sid,
            Err(status) => panic!(
                "login as {username} failed: {status:?}; log:\n{}",
                self.log()
            ),
        }
    }

    /// A session of user 1, `admin`.
    pub(crate) async fn admin_sid(&self) -> String {
        self.login("admin", ADMIN_PASSWORD).await
    }

    /// Calls an API method; `args_json` is the JSON array after sid.
    pub(crate) async fn call(
        &self,
        sid: &str,
        method: &str,
        args_json: &str,
    ) -> Result<serde_json::Value, Status> {
        let response = self
            .api()
            .call(pb::CallRequest {
                sid: sid.to_owned(),
                method: method.to_owned(),
                args_json: args_json.to_owned(),
            })
            .await?;
        Ok(serde_json::from_str(&response.into_inner().result_json).expect("result is JSON"))
    }

    /// The id of the user called `username`, looked up as admin.
    /// Every plugin as the admin's `plugins.list` shows it.
    pub(crate) async fn plugins_listed(&self) -> Vec<pb::PluginInfo> {
        let sid = self.admin_sid().await;
        self.plugins()
            .list(pb::ListPluginsRequest { sid })
            .await
            .expect("plugins.list")
            .into_inner()
            .plugins
    }

    pub(crate) async fn user_id(&self, username: &str) -> i64 {
        let sid = self.admin_sid().await;
        let users = self
            .call(&sid, "config.users.get", "")
            .await
            .expect("config.users.get");
        users
            .as_array()
            .expect("a list of users")
            .iter()
            .find(|user| user["username"] == username)
            .and_then(|user| user["id"].as_i64())
            .unwrap_or_else(|| panic!("no user {username}"))
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits"))
    }

    /// Sends `signal` to the server.
    pub(crate) fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("kill");
    }

    /// Waits up to `timeout` for the server to exit.
    pub(crate) async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Killing an exited child fails harmlessly.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
