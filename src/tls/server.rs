//! The server side of client TLS: the certificate and key from `[proxy] client_tls_cert` /
//! `client_tls_key`, reloaded when the files change, and the `tls-server-end-point` channel
//! binding (RFC 5929) of the certificate being served.
//!
//! Reloading is checked on demand, when a client asks for TLS, at most once per
//! [`RECHECK`]: a `stat` of each file, and a re-read only when the modification time or size
//! moved. Each handshake takes the config and the binding of the same load together, so a
//! client's channel binding always matches the certificate it was shown, even while a new
//! one is being installed. Connected clients keep the session they have; a new file that does
//! not parse keeps the old certificate in service and is logged once per change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tracing::{error, info};

use super::binding::end_point_hash;

/// How often, at most, the files are checked for a change.
pub const RECHECK: Duration = Duration::from_secs(1);

/// Why the certificate or key could not be loaded. Names the file, never its contents.
#[derive(Debug, Error)]
pub enum ServerTlsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate, or one that does not decode.
    #[error("{path}: no usable PEM certificate: {reason}")]
    Certificate { path: PathBuf, reason: String },
    /// The key file holds no PEM private key, or one that does not decode.
    #[error("{path}: no usable PEM private key: {reason}")]
    Key { path: PathBuf, reason: String },
    /// rustls refused the pair (a key that does not match the certificate, an unsupported
    /// key type).
    #[error("certificate {cert} with key {key}: {source}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// One load of the files: what a handshake needs.
#[derive(Clone)]
pub struct Served {
    /// Accepts a client's handshake with this load's certificate.
    pub acceptor: TlsAcceptor,
    /// The `tls-server-end-point` binding data of this load's leaf certificate; `None` when
    /// its signature algorithm has no defined hash (Ed25519, RSA-PSS), so PLUS is not offered.
    pub end_point: Option<Arc<[u8]>>,
}

/// What a file looked like when it was last read.
type Stamp = Option<(SystemTime, u64)>;

struct State {
    served: Served,
    /// Stamps of (cert, key) at the last load attempt, good or bad.
    stamps: (Stamp, Stamp),
    checked: Instant,
}

/// The client-facing TLS certificate, reloaded from its files when they change.
pub struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    state: Mutex<State>,
}

impl ServerTls {
    /// Loads the certificate chain and key; fails when either does not parse.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, ServerTlsError> {
        let stamps = (stamp(cert), stamp(key));
        let served = load_files(cert, key)?;
        Ok(ServerTls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            state: Mutex::new(State {
                served,
                stamps,
                checked: Instant::now(),
            }),
        })
    }

    /// The certificate to serve now, reloading the files first if they changed since the
    /// last check (checked at most once per [`RECHECK`]).
    pub fn current(&self) -> Served {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.checked.elapsed() >= RECHECK {
            state.checked = Instant::now();
            let stamps = (stamp(&self.cert), stamp(&self.key));
            if stamps != state.stamps {
                // Remembered even when the load fails, so a broken file is reported once,
                // not at every check; the next change is tried again.
                state.stamps = stamps;
                match load_files(&self.cert, &self.key) {
                    Ok(served) => {
                        info!(cert = %self.cert.display(), "client TLS certificate reloaded");
                        state.served = served;
                    }
                    Err(e) => error!(
                        error = %e,
                        "cannot reload the client TLS certificate; the previous one stays in use"
                    ),
                }
            }
        }
        state.served.clone()
    }

    /// Re-reads both files now, changed or not (for a configuration reload). On failure the
    /// certificate in service stays and the error says why.
    pub fn reload(&self) -> Result<(), ServerTlsError> {
        let stamps = (stamp(&self.cert), stamp(&self.key));
        let served = load_files(&self.cert, &self.key)?;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.served = served;
        state.stamps = stamps;
        state.checked = Instant::now();
        Ok(())
    }
}

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Reads and checks both files and builds the rustls config (TLS 1.2 and 1.3 only).
pub fn load_files(cert: &Path, key: &Path) -> Result<Served, ServerTlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| ServerTlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let bad_cert = |reason: String| ServerTlsError::Certificate {
        path: cert.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_cert(e.to_string()))?;
    let leaf = chain
        .first()
        .ok_or_else(|| bad_cert("the file has no CERTIFICATE block".to_owned()))?;
    let end_point = end_point_hash(leaf).map(Arc::from);
    // The error of a key that does not parse says only what kind of block failed.
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| ServerTlsError::Key {
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    let pair = |source| ServerTlsError::Pair {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(pair)?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(pair)?;
    Ok(Served {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        end_point,
    })
}

#[cfg(test)]
mod tests;
