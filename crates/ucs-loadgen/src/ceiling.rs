//! The ceiling peer: a tonic unary server that answers `ucs.v1.Api/Call`
//! with the same message the real server sends, and does nothing else. No
//! blocking-pool hop, no session lookup, no JSON: what tonic itself costs.

use std::net::SocketAddr;
use std::time::Duration;

use tonic::{Request, Response, Status};
use ucs_grpc::pb;
use ucs_grpc::pb::api_server::{Api, ApiServer};

/// Answers every call with `result_json`.
struct CeilingService {
    /// The `agents.list` answer of the real server, encoded once.
    result_json: String,
}

#[tonic::async_trait]
impl Api for CeilingService {
    async fn call(
        &self,
        _request: Request<pb::CallRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        Ok(Response::new(pb::CallResponse {
            result_json: self.result_json.clone(),
        }))
    }
}

/// Serves on `listen` (loopback) with the server's runtime shape (a
/// multi-thread runtime with one worker per core) until `lifetime` passes.
pub(crate) fn run(
    listen: SocketAddr,
    result_json: String,
    lifetime: Duration,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        listen.ip().is_loopback(),
        "the ceiling listens on loopback only"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        tonic::transport::Server::builder()
            .add_service(ApiServer::new(CeilingService { result_json }))
            .serve_with_shutdown(listen, tokio::time::sleep(lifetime))
            .await
    })?;
    Ok(())
}
