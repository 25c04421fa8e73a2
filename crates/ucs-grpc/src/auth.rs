//! `ucs.v1.Auth`: sessions.

use tonic::{Request, Response, Status};
use ucs_api::{Api, ApiError};

use crate::pb;
use crate::run_blocking;

/// Logs users in and out. Login hashes the password, which is deliberately
/// slow, so it runs on the blocking pool like every API call.
#[derive(Clone)]
pub struct AuthService {
    /// The API whose core holds users and sessions.
    api: Api,
}

impl AuthService {
    /// The service over `api`.
    pub fn new(api: Api) -> Self {
        AuthService { api }
    }
}

#[tonic::async_trait]
impl pb::auth_server::Auth for AuthService {
    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let pb::LoginRequest { username, password } = request.into_inner();
        let api = self.api.clone();
        let (sid, user) = run_blocking(move || {
            api.core()
                .login(&username, &password)
                .map_err(ApiError::from)
        })
        .await?;
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
            .sessions
            .close(&sid)
            .map_err(|err| crate::status::from_api_error(err.into()))?;
        Ok(Response::new(pb::LogoutResponse {}))
    }
}
