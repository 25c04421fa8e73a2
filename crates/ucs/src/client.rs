//! The client subcommands: one gRPC call each (two or three with a login
//! first), printed for people or as JSON with `--json`.
//!
//! Errors print `error: <CODE>: <message>` to stderr and exit 1, so scripts
//! can match on the code.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use ucs_grpc::pb;
use ucs_grpc::pb::api_client::ApiClient;
use ucs_grpc::pb::auth_client::AuthClient;
use ucs_grpc::pb::events_client::EventsClient;
use ucs_grpc::pb::plugins_client::PluginsClient;

use crate::cli::{ClientArgs, Command, PluginsCommand};

/// How long the client waits to connect before it gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a client command failed.
enum Failure {
    /// The server answered with an error status.
    Status(Status),
    /// Anything else: no connection, bad usage, unreadable output.
    Other(String),
}

impl From<Status> for Failure {
    fn from(status: Status) -> Self {
        Failure::Status(status)
    }
}

impl From<std::io::Error> for Failure {
    fn from(err: std::io::Error) -> Self {
        Failure::Other(format!("cannot write output: {err}"))
    }
}

/// Runs one client subcommand and returns the exit code.
pub(crate) fn run(command: Command) -> ExitCode {
    let Some(args) = command.client_args().cloned() else {
        eprintln!("error: not a client command: it runs without a server");
        return ExitCode::from(2);
    };
    // Quiet unless asked: the output is the command's result.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_command(&args, command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Status(status)) => {
            eprintln!("error: {}: {}", code_name(status.code()), status.message());
            ExitCode::FAILURE
        }
        Err(Failure::Other(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run_command(args: &ClientArgs, command: Command) -> Result<(), Failure> {
    let channel = connect(&args.server, args.ca.as_deref()).await?;
    match command {
        // `run` is only called for client commands.
        Command::Serve(_)
        | Command::Stubs { .. }
        | Command::Plugin { .. }
        | Command::Completions { .. }
        | Command::PluginHost => Err(Failure::Other(
            "not a client command: it runs without a server".into(),
        )),
        Command::Login { .. } => {
            let (user, password) = credentials(args)?
                .ok_or_else(|| Failure::Other("login needs --user and --password".into()))?;
            let login = login(&channel, user, password).await?;
            if args.json {
                print_line(&json!({
                    "sid": login.sid,
                    "user_id": login.user_id,
                    "superuser": login.superuser,
                }))
            } else {
                print_line(&login.sid)
            }
        }
        Command::Logout { .. } => {
            let sid = args
                .sid
                .clone()
                .ok_or_else(|| Failure::Other("logout needs --sid or UCS_SID".into()))?;
            logout(&channel, sid).await
        }
        command => {
            let session = Session::open(&channel, args).await?;
            let result = run_with_session(&channel, args, &session.sid, command).await;
            session.close(&channel).await;
            result
        }
    }
}

async fn run_with_session(
    channel: &Channel,
    args: &ClientArgs,
    sid: &str,
    command: Command,
) -> Result<(), Failure> {
    match command {
        Command::Plugins { command, .. } => {
            let mut client = PluginsClient::new(channel.clone());
            match command {
                PluginsCommand::List => {
                    let plugins = client
                        .list(pb::ListPluginsRequest {
                            sid: sid.to_owned(),
                        })
                        .await?
                        .into_inner()
                        .plugins;
                    print_plugins(&plugins, args.json)
                }
                PluginsCommand::Load { name } => {
                    let info = client
                        .load(pb::PluginRequest {
                            sid: sid.to_owned(),
                            name,
                        })
                        .await?
                        .into_inner();
                    print_plugins(std::slice::from_ref(&info), args.json)
                }
                PluginsCommand::Unload { name } => {
                    let info = client
                        .unload(pb::PluginRequest {
                            sid: sid.to_owned(),
                            name,
                        })
                        .await?
                        .into_inner();
                    print_plugins(std::slice::from_ref(&info), args.json)
                }
            }
        }
        Command::Call {
            method, args_json, ..
        } => {
            let result_json = ApiClient::new(channel.clone())
                .call(pb::CallRequest {
                    sid: sid.to_owned(),
                    method,
                    args_json: args_json.unwrap_or_default(),
                })
                .await?
                .into_inner()
                .result_json;
            if args.json {
                print_line(&result_json)
            } else {
                print_line(&pretty_json(&result_json))
            }
        }
        Command::Events { names, .. } => stream_events(channel, sid, names, args.json).await,
        Command::Serve(_)
        | Command::Login { .. }
        | Command::Logout { .. }
        | Command::Stubs { .. }
        | Command::Plugin { .. }
        | Command::Completions { .. }
        | Command::PluginHost => Err(Failure::Other("not a session command".into())),
    }
}

async fn connect(server: &str, ca: Option<&std::path::Path>) -> Result<Channel, Failure> {
    // With --ca the connector does TLS itself, and tonic refuses an
    // `https` URL it is not doing TLS for: it is given the `http` form.
    let url = match ca {
        Some(_) => server.replacen("https://", "http://", 1),
        None => server.to_owned(),
    };
    let endpoint = Endpoint::from_shared(url)
        .map_err(|err| Failure::Other(format!("invalid --server URL '{server}': {err}")))?
        .connect_timeout(CONNECT_TIMEOUT);
    let connected = match ca {
        Some(ca) => {
            let pem = std::fs::read(ca).map_err(|err| {
                Failure::Other(format!("cannot read --ca {}: {err}", ca.display()))
            })?;
            crate::tls_client::connect(endpoint, &pem)
                .await
                .map_err(|err| Failure::Other(format!("--ca {}: {err}", ca.display())))?
        }
        None => endpoint.connect().await,
    };
    connected.map_err(|err| Failure::Other(format!("cannot connect to {server}: {}", why(&err))))
}

/// An error with every cause under it (tonic's own message is only
/// "transport error"), and what to do about the TLS failures operators meet
/// (issue 17 item 7).
fn why(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    if text.contains("CaUsedAsEndEntity") {
        text.push_str(
            "; the server's certificate is a CA certificate (basicConstraints CA:TRUE), which \
             TLS does not accept as a server's own: give the server a certificate with CA:FALSE \
             (`openssl req -x509 ... -addext basicConstraints=critical,CA:FALSE`), or one signed \
             by that CA, and pass the CA with --ca",
        );
    } else if text.contains("UnknownIssuer") || text.contains("BadSignature") {
        text.push_str("; the server's certificate is not signed by the --ca certificate");
    } else if text.contains("NotValidForName") {
        text.push_str("; the server's certificate does not name the host in --server");
    }
    text
}

/// `--user` and `--password`, if given; one without the other is an error.
fn credentials(args: &ClientArgs) -> Result<Option<(String, String)>, Failure> {
    match (&args.user, &args.password) {
        (Some(user), Some(password)) => Ok(Some((user.clone(), password.clone()))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(Failure::Other("--user needs --password".into())),
        (None, Some(_)) => Err(Failure::Other("--password needs --user".into())),
    }
}

async fn login(
    channel: &Channel,
    username: String,
    password: String,
) -> Result<pb::LoginResponse, Failure> {
    Ok(AuthClient::new(channel.clone())
        .login(pb::LoginRequest { username, password })
        .await?
        .into_inner())
}

async fn logout(channel: &Channel, sid: String) -> Result<(), Failure> {
    AuthClient::new(channel.clone())
        .logout(pb::LogoutRequest { sid })
        .await?;
    Ok(())
}

/// The session a command runs in: given, or logged in for this command.
struct Session {
    /// The session id.
    sid: String,
    /// Whether this command logged in, and so must log out.
    logged_in_here: bool,
}

impl Session {
    async fn open(channel: &Channel, args: &ClientArgs) -> Result<Self, Failure> {
        if let Some((user, password)) = credentials(args)? {
            let login = login(channel, user, password).await?;
            return Ok(Session {
                sid: login.sid,
                logged_in_here: true,
            });
        }
        match &args.sid {
            Some(sid) => Ok(Session {
                sid: sid.clone(),
                logged_in_here: false,
            }),
            None => Err(Failure::Other(
                "no session: pass --sid or set UCS_SID (see `ucs login`), or pass --user and --password"
                    .into(),
            )),
        }
    }

    async fn close(self, channel: &Channel) {
        if self.logged_in_here
            && let Err(failure) = logout(channel, self.sid).await
        {
            let message = match failure {
                Failure::Status(status) => status.message().to_owned(),
                Failure::Other(message) => message,
            };
            tracing::warn!("logging out failed: {message}");
        }
    }
}

async fn stream_events(
    channel: &Channel,
    sid: &str,
    names: Vec<String>,
    as_json: bool,
) -> Result<(), Failure> {
    let mut stream = EventsClient::new(channel.clone())
        .subscribe(pb::SubscribeRequest {
            sid: sid.to_owned(),
            events: names,
        })
        .await?
        .into_inner();
    loop {
        let event = tokio::select! {
            // Ctrl-C ends the stream cleanly, so a session opened for it is
            // closed again.
            _ = tokio::signal::ctrl_c() => return Ok(()),
            next = stream.message() => match next? {
                Some(event) => event,
                None => return Ok(()),
            },
        };
        if as_json {
            let data: serde_json::Value =
                serde_json::from_str(&event.data_json).unwrap_or(serde_json::Value::Null);
            print_line(&json!({"seq": event.seq, "name": event.name, "data": data}))?;
        } else {
            print_line(&format!(
                "#{} {} {}",
                event.seq, event.name, event.data_json
            ))?;
        }
    }
}

fn state_name(info: &pb::PluginInfo) -> &'static str {
    // The API's one table of names (`PluginState::as_str`), not a copy.
    let state = match info.state() {
        pb::PluginState::Unspecified => return "unknown",
        pb::PluginState::Running => ucs_api::PluginState::Running,
        pb::PluginState::Stopped => ucs_api::PluginState::Stopped,
        pb::PluginState::Failed => ucs_api::PluginState::Failed,
        pb::PluginState::Starting => ucs_api::PluginState::Starting,
    };
    state.as_str()
}

fn isolation_name(info: &pb::PluginInfo) -> &'static str {
    match info.isolation() {
        pb::Isolation::Unspecified => "unknown",
        pb::Isolation::Inprocess => ucs_api::Isolation::InProcess.as_str(),
        pb::Isolation::Process => ucs_api::Isolation::Process.as_str(),
    }
}

fn print_plugins(plugins: &[pb::PluginInfo], as_json: bool) -> Result<(), Failure> {
    if as_json {
        let list: Vec<_> = plugins
            .iter()
            .map(|info| {
                let registrations: Vec<_> = info
                    .registrations
                    .iter()
                    .map(|r| {
                        json!({
                            "kind": r.kind,
                            "target": r.target,
                            "callable": r.callable,
                            "calls": r.calls,
                            "errors": r.errors,
                            "overruns": r.overruns,
                            "skipped": r.skipped,
                            "total_ns": r.total_ns,
                            "p50_ns": r.p50_ns,
                            "p99_ns": r.p99_ns,
                            "breaker_open": r.breaker_open,
                        })
                    })
                    .collect();
                json!({
                    "name": info.name,
                    "class_name": info.class_name,
                    "state": state_name(info),
                    "error": info.error,
                    "path": info.path,
                    "isolation": isolation_name(info),
                    "host_pid": (info.host_pid != 0).then_some(info.host_pid),
                    "restarts": info.restarts,
                    "registrations": registrations,
                })
            })
            .collect();
        return print_line(&serde_json::Value::from(list));
    }
    if plugins.is_empty() {
        return print_line(&"no plugins");
    }
    // Issue 18: where each plugin runs, its host and how often that host
    // was restarted are what an operator looks for after a crash.
    let header = ["NAME", "STATE", "MODE", "PID", "RESTARTS", "CLASS", "PATH"].map(String::from);
    let rows: Vec<[String; 7]> = plugins
        .iter()
        .map(|info| {
            [
                info.name.clone(),
                state_name(info).to_owned(),
                isolation_name(info).to_owned(),
                match info.host_pid {
                    0 => "-".to_owned(),
                    pid => pid.to_string(),
                },
                info.restarts.to_string(),
                if info.class_name.is_empty() {
                    "-".to_owned()
                } else {
                    info.class_name.clone()
                },
                info.path.clone(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|column| {
            rows.iter()
                .chain([&header])
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        // The last column is not padded: no trailing blanks.
        let (path, padded) = (&row[6], &row[..6]);
        for (cell, width) in padded.iter().zip(&widths) {
            out.push_str(&format!("{cell:width$}  "));
        }
        out.push_str(path);
        out.push('\n');
    }
    for info in plugins.iter().filter(|info| !info.error.is_empty()) {
        out.push_str(&format!("\n{} error:\n", info.name));
        for line in info.error.lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    print_line(&out.trim_end())
}

fn pretty_json(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|value| serde_json::to_string_pretty(&value).ok())
        .unwrap_or_else(|| text.to_owned())
}

/// Writes one line to stdout; a closed stdout (`ucs events | head`) ends the
/// command quietly.
fn print_line(line: &dyn std::fmt::Display) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{line}") {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// The canonical name of a status code, as grpcurl and the gRPC docs print it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
