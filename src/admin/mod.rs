//! The operator's plane: the admin console (database `pglease`, [`console`]) and the HTTP
//! endpoint on `admin_listen` ([`http`]: metrics, liveness, readiness).

pub mod console;
pub mod http;
