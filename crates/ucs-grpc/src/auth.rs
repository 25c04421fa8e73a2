//! `ucs.v1.Auth`: sessions.

use std::sync::Arc;

use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};
use ucs_api::{Api, ApiError};
use ucs_core::CoreError;

use crate::pb;
use crate::run_blocking;
use crate::throttle::{LoginThrottle, ThrottleConfig, Throttled};

/// Logs users in and out. Login hashes the password, which is deliberately
/// slow, so it runs on the blocking pool like every API call; failed logins
/// are throttled per (user, peer address) and slowed per user and per peer
/// ([`LoginThrottle`]).
#[derive(Clone)]
pub struct AuthService {
    /// The API whose core holds users and sessions.
    api: Api,
    /// Slows password guessing down; shared by every clone of the service.
    throttle: Arc<LoginThrottle>,
}

impl AuthService {
    /// The service over `api`, with the default login throttle.
    pub fn new(api: Api) -> Self {
        Self::with_throttle(api, ThrottleConfig::default())
    }

    /// The service over `api`, throttling failed logins by `config`.
    pub fn with_throttle(api: Api, config: ThrottleConfig) -> Self {
        Self::with_shared_throttle(api, Arc::new(LoginThrottle::new(config)))
    }

    /// The service over `api`, throttling failed logins with `throttle`,
    /// which another way in (the web console's login) shares, so a guesser
    /// gets one allowance whichever way it comes.
    pub fn with_shared_throttle(api: Api, throttle: Arc<LoginThrottle>) -> Self {
        AuthService { api, throttle }
    }
}

/// RESOURCE_EXHAUSTED with the wait in the message and as a
/// `google.rpc.RetryInfo` detail. Not UNAUTHENTICATED: the password was not
/// even checked, and a client must be able to tell "wrong password" from
/// "wait".
fn throttled_status(throttled: &Throttled) -> Status {
    // Whole seconds, rounded up, so "retry in 0 s" is never said.
    let seconds =
        throttled.retry_after.as_secs() + u64::from(throttled.retry_after.subsec_nanos() > 0);
    Status::with_error_details(
        Code::ResourceExhausted,
        format!(
            "too many failed logins for {}; retry in {seconds} s",
            throttled.what
        ),
        ErrorDetails::with_retry_info(Some(throttled.retry_after)),
    )
}

#[tonic::async_trait]
impl pb::auth_server::Auth for AuthService {
    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let peer = request.remote_addr().map(|address| address.ip());
        let pb::LoginRequest { username, password } = request.into_inner();
        if let Err(throttled) = self.throttle.check(&username, peer) {
            tracing::warn!(
                username,
                "login refused: {} is throttled for {:?}",
                throttled.what,
                throttled.retry_after
            );
            return Err(throttled_status(&throttled));
        }
        let api = self.api.clone();
        let attempted = username.clone();
        let outcome =
            run_blocking(move || Ok::<_, ApiError>(api.core().login(&username, &password))).await?;
        let (sid, user) = match outcome {
            Ok(session) => {
                self.throttle.succeeded(&attempted, peer);
                session
            }
            Err(error @ CoreError::BadCredentials) => {
                // Held back on a timer, not a thread: slows the guesser's
                // next guess without taking a worker from anyone.
                let delay = self.throttle.failed(&attempted, peer);
                tokio::time::sleep(delay).await;
                return Err(crate::status::from_api_error(error.into()));
            }
            Err(error) => return Err(crate::status::from_api_error(error.into())),
        };
        Ok(Response::new(pb::LoginResponse {
            sid,
            user_id: user.id,
            superuser: user.superuser,
        }))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let pb::LogoutRequest { sid } = request.into_inner();
        // Closing a session is a map removal: no Python, no wait.
        self.api
            .core()
            .sessions()
            .close(&sid)
            .map_err(|err| crate::status::from_api_error(err.into()))?;
        Ok(Response::new(pb::LogoutResponse {}))
    }
}
