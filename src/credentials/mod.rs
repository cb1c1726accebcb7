//! Where upstream credentials come from and how the current one is published.
//!
//! A [`Lease`] is one credential from a [`Source`]. One rotator per `[credentials.NAME]` entry
//! acquires leases and publishes the newest on a `watch` channel; pools read it when they open
//! a connection and stamp the connection with the lease's generation (DESIGN §5).

pub mod audit;
pub mod deadline;
pub mod exec_source;
pub mod file_source;
pub mod instruments;
pub mod issuer;
pub mod json;
pub mod lease;
pub mod rotator;
pub mod schedule;
pub mod setup;
pub mod source;
pub mod static_source;
pub mod vault;

pub use deadline::{Deadline, EndReason, LeaseEnd};
pub use lease::Lease;
pub use rotator::{Credentials, LeaseState, ObtainError, ProofError, Prover, Rotator};
pub use schedule::Lifecycle;
pub use source::{Source, SourceError};
