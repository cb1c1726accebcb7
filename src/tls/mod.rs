//! TLS: the certificate the proxy serves to its clients ([`server`]).

pub mod server;
