//! pglease: a PostgreSQL wire-protocol proxy whose upstream logins use short-lived, rotating
//! credentials (leases), replaced before they expire so that no client notices.
//!
//! # Layout
//!
//! Read in this order; each folder is one box of the picture in the README.
//!
//! - [`protocol`]: framing and the few messages the proxy reads or writes. No I/O.
//! - [`auth`]: the server half of client authentication (SCRAM-SHA-256, md5). No I/O.
//! - [`config`]: the TOML contract, secret indirection (`env:`, `file:`) and validation.
//! - [`credentials`]: leases, the sources they come from, and the rotator that publishes them.
//! - [`upstream`]: opening and authenticating a connection to PostgreSQL with a lease.
//! - [`tls`]: rustls configurations and the maybe-encrypted stream the relay moves bytes on.
//! - [`pool`]: one pool of upstream connections per (database, user), with its wait queue; the
//!   checked-out upstream ([`pool::Checkout`]) with the state that lives on the connection and
//!   the only ways to swap it for a replacement (a connection opened ahead of need on a newer
//!   lease) or close it with a [`pool::CloseReason`].
//! - [`client`]: a client's handshake, authentication and relay loop, and the state every
//!   client task reads ([`client::Shared`]); `max_client_conn` ([`client::admission`]) and
//!   the session timeouts ([`client::timers`]).
//! - [`metrics`]: the Prometheus registry: hands the data path its instruments, reads pools,
//!   leases and the process at scrape time, and judges readiness.
//! - [`admin`]: the operator's plane: the HTTP endpoint on `admin_listen` (`/metrics`,
//!   `/healthz`, `/readyz`) and the admin console (database `pglease`).
//! - [`app`]: wiring only: builds the shared state from a config and runs the listener.
//! - [`logging`]: the process's log output (filter, `text` or `json` lines on stderr).
//! - [`dev`]: `pglease dev`, a throwaway local PostgreSQL with the proxy in front of it.
//! - [`secret`]: the redacting type every secret travels in.
//!
//! Shared state is passed as explicit handles (no process globals), so a test can run a
//! whole proxy in-process on `127.0.0.1:0`. State is defined below its users, never in
//! `app`, and no two folders import each other.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod auth;
pub mod client;
pub mod config;
pub mod credentials;
pub mod dev;
pub mod logging;
pub mod metrics;
pub mod pool;
pub mod protocol;
pub mod secret;
#[cfg(test)]
mod test_log;
pub mod tls;
pub mod upstream;
