//! TLS with rustls (ring provider, TLS 1.2 and 1.3 only): [`client`] for pglease's own
//! connections to PostgreSQL, [`stream`] for a socket that may or may not be encrypted.

pub mod binding;
pub mod client;
pub mod stream;
