//! The rustls configurations of every door and hop: TLS 1.3 only, one crypto
//! provider (ring).

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ServerConfig};

use crate::files::{Material, TlsError};

/// Whether a server asks its clients for certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every client must present a certificate from the CA (service to service).
    Required,
    /// A client may present one (it then identifies the caller); others are
    /// let in and identified some other way (public doors).
    Optional,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration presenting `m`'s certificate, verifying client
/// certificates against `m`'s CA, and offering `alpn` (e.g. `h2`).
pub fn server(m: &Material, auth: ClientAuth, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(m.roots.clone(), provider());
    let verifier = match auth {
        ClientAuth::Required => verifier.build()?,
        ClientAuth::Optional => verifier.allow_unauthenticated().build()?,
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(m.chain.clone(), m.key.clone_key())?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A client configuration trusting `m`'s CA and presenting `m`'s certificate
/// (mutual TLS), offering HTTP/2.
pub fn client(m: &Material) -> Result<ClientConfig, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(m.roots.clone())
        .with_client_auth_cert(m.chain.clone(), m.key.clone_key())?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A client configuration trusting only the CA certificates in `roots` and
/// presenting none (a caller identified by a bearer token, or not at all).
pub fn anonymous_client(roots: Arc<rustls::RootCertStore>) -> Result<ClientConfig, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// `build`, once `m`'s certificate is seen to carry `name` (a service's
/// certificate must name its role; a rotated one that does not is refused).
pub fn naming<T>(
    name: String,
    cert: std::path::PathBuf,
    build: impl Fn(&Material) -> Result<T, TlsError> + Send + Sync,
) -> impl Fn(&Material) -> Result<T, TlsError> + Send + Sync {
    move |m| {
        if !crate::identity::carries(&m.chain, &name) {
            return Err(TlsError::MissingName {
                cert: cert.clone(),
                name: name.clone(),
            });
        }
        build(m)
    }
}
