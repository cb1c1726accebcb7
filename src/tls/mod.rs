//! TLS with rustls (ring provider, TLS 1.2 and 1.3 only): [`server`] for the certificate the
//! proxy serves to its clients, [`client`] for pglease's own connections to PostgreSQL (pool
//! connections; [`postgres`] adapts it for tokio-postgres, the issuer's admin connection),
//! [`stream`] for a socket that may or may not be encrypted, [`binding`] for SCRAM's channel
//! binding to a certificate.

pub mod binding;
pub mod client;
pub mod postgres;
pub mod server;
pub mod stream;
