//! Server reflection (issue 17 item 6): `grpc.reflection.v1` and
//! `v1alpha`, answering for every message a client may meet without the
//! proto files: the `ucs.v1` services, health, reflection itself, and the
//! `google.rpc` error details (`google.rpc.BadRequest` in INVALID_ARGUMENT
//! answers), so grpcurl and reflection-only clients can decode them.

use tonic_reflection::server::v1::{ServerReflection, ServerReflectionServer};
use tonic_reflection::server::v1alpha::{
    ServerReflection as ServerReflectionV1alpha,
    ServerReflectionServer as ServerReflectionServerV1alpha,
};

use crate::pb;

/// Every descriptor set reflection serves; both versions serve the same.
const DESCRIPTOR_SETS: [&[u8]; 5] = [
    pb::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_types::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

/// Both reflection versions are registered above, so each lists the
/// other too (tonic's default adds only its own).
fn builder() -> tonic_reflection::server::Builder<'static> {
    DESCRIPTOR_SETS.into_iter().fold(
        tonic_reflection::server::Builder::configure().include_reflection_service(false),
        |builder, set| builder.register_encoded_file_descriptor_set(set),
    )
}

/// The `grpc.reflection.v1` service.
pub(crate) fn v1()
-> Result<ServerReflectionServer<impl ServerReflection>, tonic_reflection::server::Error> {
    builder().build_v1()
}

/// The `grpc.reflection.v1alpha` service, which older grpcurl and clients
/// ask for.
pub(crate) fn v1alpha() -> Result<
    ServerReflectionServerV1alpha<impl ServerReflectionV1alpha>,
    tonic_reflection::server::Error,
> {
    builder().build_v1alpha()
}
