//! The operator's plane: the HTTP endpoint on `admin_listen` ([`http`]: metrics, liveness,
//! readiness).

pub mod http;
