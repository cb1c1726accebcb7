//! The rustls client configuration of pglease's connections to PostgreSQL (pool connections
//! and the issuer's admin connection), with libpq's `sslmode` meanings.
//!
//! One verifier serves every mode. It always checks the handshake signature (the server holds
//! the key of the certificate it shows); what it checks of the certificate depends on the mode:
//! nothing under `prefer` and `require` (libpq without a root certificate), the chain under
//! `verify-ca`, the chain and the host name under `verify-full`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use tokio_rustls::rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::server::ParsedCertificate;
use tokio_rustls::rustls::{
    self, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::config::UpstreamTlsMode;

/// Where a client configuration's trust and identity come from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientTlsFiles {
    /// PEM CA bundle; the system's roots when `None`.
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain, presented when the server asks.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
}

/// Why a client configuration could not be built. Names the file, never its contents.
#[derive(Debug, Error)]
pub enum TlsConfigError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    /// No CA file was given and the system trust store has no usable certificate.
    #[error("no upstream_tls_ca given and no system CA certificates found")]
    NoSystemRoots,
    /// rustls refused the combination (for example a key that does not match its certificate).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The ring provider, the one every TLS user in the tree shares.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration for `mode` (never `disable`, which needs none): TLS 1.2 and 1.3,
/// the verifier described in the module doc, and the client certificate when one is given.
pub fn client_config(
    mode: UpstreamTlsMode,
    files: &ClientTlsFiles,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let provider = provider();
    let verifies = matches!(
        mode,
        UpstreamTlsMode::VerifyCa | UpstreamTlsMode::VerifyFull
    );
    let roots = if verifies {
        Some(Arc::new(root_store(files.ca.as_deref())?))
    } else {
        None
    };
    let verifier = Arc::new(ModeVerifier {
        mode,
        roots,
        algorithms: provider.signature_verification_algorithms,
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            builder.with_client_auth_cert(read_certs(cert)?, read_key(key)?)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

fn root_store(ca: Option<&Path>) -> Result<RootCertStore, TlsConfigError> {
    let mut store = RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in read_certs(path)? {
                store.add(cert).map_err(|e| file_error(path, e))?;
            }
        }
        None => {
            // Unreadable entries of the system store are skipped, as every TLS client does.
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(TlsConfigError::NoSystemRoots);
            }
        }
    }
    Ok(store)
}

/// Every certificate of a PEM file, which must hold at least one.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|items| items.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no CERTIFICATE in the file"));
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, e))
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> TlsConfigError {
    TlsConfigError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The server name a connection to `host` presents (SNI) and, under `verify-full`, checks.
pub fn server_name(
    host: &str,
) -> Result<ServerName<'static>, rustls::pki_types::InvalidDnsNameError> {
    ServerName::try_from(host.to_owned())
}

/// A rustls error as an operator wants to read it in a log line or a client's error.
pub fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => {
                "certificate not signed by a trusted CA (unknown issuer)".to_owned()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "certificate does not name the host (name mismatch)".to_owned()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "certificate expired".to_owned()
            }
            other => format!("invalid certificate: {other:?}"),
        },
        other => other.to_string(),
    }
}

/// The certificate checks of one `sslmode`; see the module doc.
#[derive(Debug)]
struct ModeVerifier {
    mode: UpstreamTlsMode,
    /// Trust anchors; present under `verify-ca` and `verify-full` only.
    roots: Option<Arc<RootCertStore>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ModeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if self.mode == UpstreamTlsMode::VerifyFull {
            verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
