//! A rustls connector for tokio-postgres, with a choice of what it reports as the
//! `tls-server-end-point` channel binding, so tests can send a right, wrong or no binding.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// What the connector tells tokio-postgres about channel binding.
#[derive(Clone, Copy, Debug)]
pub enum Binding {
    /// SHA-256 of the certificate the server showed (right for the test certs).
    Real,
    /// Some other 32 bytes.
    Wrong,
    /// None: tokio-postgres then answers a PLUS offer with the `y` flag.
    Absent,
}

/// Verifies the server against one CA.
#[derive(Clone)]
pub struct Rustls {
    config: Arc<ClientConfig>,
    binding: Binding,
}

impl Rustls {
    /// Trusts the CA certificates in `ca_pem` only.
    pub fn new(ca_pem: &str, binding: Binding) -> Rustls {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.expect("CA PEM")).expect("CA cert");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Rustls {
            config: Arc::new(config),
            binding,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> MakeTlsConnect<S> for Rustls {
    type Stream = Stream<S>;
    type TlsConnect = Connect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<Connect> {
        let name = ServerName::try_from(domain.to_owned()).map_err(io::Error::other)?;
        Ok(Connect {
            tls: self.clone(),
            name,
        })
    }
}

/// One connection attempt's connector, for the host name tokio-postgres was given.
pub struct Connect {
    tls: Rustls,
    name: ServerName<'static>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> TlsConnect<S> for Connect {
    type Stream = Stream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Stream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let connector = TlsConnector::from(self.tls.config);
            let tls = connector.connect(self.name, stream).await?;
            let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
            let binding = match self.tls.binding {
                Binding::Real => leaf.map(|c| Sha256::digest(c).to_vec()),
                Binding::Wrong => Some(vec![0x5a; 32]),
                Binding::Absent => None,
            };
            Ok(Stream { tls, binding })
        })
    }
}

/// An established TLS connection and the binding it reports.
pub struct Stream<S> {
    tls: tokio_rustls::client::TlsStream<S>,
    binding: Option<Vec<u8>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for Stream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        match &self.binding {
            Some(hash) => ChannelBinding::tls_server_end_point(hash.clone()),
            None => ChannelBinding::none(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }
}
