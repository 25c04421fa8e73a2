//! The client side of `ucs --ca FILE` (issue 17 item 7).
//!
//! tonic's own TLS settings verify the server's certificate only as a CA's
//! signature on it, so the certificate operators make first, a self-signed
//! one from `openssl req -x509` (which is `CA:TRUE`), was refused
//! (`CaUsedAsEndEntity`). Here a certificate in the `--ca` file is trusted
//! two ways: as a CA that signed the server's certificate (web PKI
//! validation, as before), or as exactly the server's certificate (pinned:
//! the handshake still proves the server holds its key). The connection is
//! made by hand (TCP with `TCP_NODELAY`, then rustls with ALPN `h2`) and
//! handed to tonic as its connector.

use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tonic::transport::{Channel, Endpoint, Uri};

/// Trusts a server certificate that is in the `--ca` file or signed by one.
#[derive(Debug)]
struct PinnedOrSigned {
    /// The `--ca` certificates, compared byte for byte with the server's.
    pinned: Vec<CertificateDer<'static>>,
    /// The same certificates as trust anchors.
    signed: Arc<WebPkiServerVerifier>,
    /// Checks the handshake signatures.
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedOrSigned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|pinned| pinned.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        self.signed
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The rustls settings for certificates in `ca_pem`.
fn client_config(ca_pem: &[u8]) -> Result<rustls::ClientConfig, String> {
    let pinned = CertificateDer::pem_slice_iter(ca_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("not PEM certificates: {err}"))?;
    if pinned.is_empty() {
        return Err("no certificate in it".to_owned());
    }
    let mut roots = RootCertStore::empty();
    let (_, unusable) = roots.add_parsable_certificates(pinned.iter().cloned());
    if unusable > 0 {
        tracing::debug!(
            unusable,
            "--ca: certificates usable only as the server's own"
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signed =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .map_err(|err| format!("cannot use it as a CA: {err}"))?;
    let verifier = PinnedOrSigned {
        pinned,
        signed,
        provider: Arc::clone(&provider),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Connects `endpoint` over TLS, trusting the certificates of `ca_pem` as
/// described above; an `Err` is a problem with the file itself, a failed
/// connection comes back as tonic's error with every cause.
pub(crate) async fn connect(
    endpoint: Endpoint,
    ca_pem: &[u8],
) -> Result<Result<Channel, tonic::transport::Error>, String> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(ca_pem)?));
    let service = tower::service_fn(move |uri: Uri| {
        let connector = connector.clone();
        async move {
            let invalid =
                |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_owned());
            let host = uri
                .host()
                .ok_or_else(|| invalid("no host in --server"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(host).map_err(|err| invalid(&err.to_string()))?;
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    Ok(endpoint.connect_with_connector(service).await)
}
