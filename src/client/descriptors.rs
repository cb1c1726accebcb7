//! The file-descriptor budget behind `max_client_conn`: each client and each upstream is one
//! descriptor, and a process out of them cannot even accept a connection to refuse it.
//!
//! At start the soft `RLIMIT_NOFILE` is raised as far as the configured limits need, up to
//! the hard limit (as Go's runtime does for every program): systemd and most shells start
//! services with a soft limit of 1024 and a far higher hard one, which would otherwise cap
//! pglease well below its default `max_client_conn`. A hard limit that is too low is only
//! warned about; the operator raises it (`LimitNOFILE=`, `ulimit -Hn`).

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use tracing::{info, warn};

/// Descriptors needed besides clients and upstreams: listeners, cancel and listener
/// connections, the issuer's admin connections, log and secret files.
const SPARE: u64 = 256;

/// What to do about the soft limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// It already holds what is needed (or there is no limit).
    Enough,
    /// Raise the soft limit to this.
    Raise(u64),
    /// Even the hard limit holds only this many: raise to it, and warn.
    Short(u64),
}

fn plan(limit: &Rlimit, needed: u64) -> Plan {
    match (limit.current, limit.maximum) {
        (None, _) => Plan::Enough,
        (Some(soft), _) if soft >= needed => Plan::Enough,
        (Some(_), None) => Plan::Raise(needed),
        (Some(_), Some(hard)) if hard >= needed => Plan::Raise(needed),
        (Some(_), Some(hard)) => Plan::Short(hard),
    }
}

/// Makes room for `max_client_conn` clients and `upstreams` pool connections (with their
/// reserves), raising the soft descriptor limit if needed and warning when it cannot.
pub fn make_room(max_client_conn: usize, upstreams: usize) {
    let needed = (max_client_conn as u64)
        .saturating_add(upstreams as u64)
        .saturating_add(SPARE);
    let limit = getrlimit(Resource::Nofile);
    let (to, short) = match plan(&limit, needed) {
        Plan::Enough => return,
        Plan::Raise(to) => (to, false),
        Plan::Short(hard) => (hard, true),
    };
    let raised = Rlimit {
        current: Some(to),
        maximum: limit.maximum,
    };
    let result = setrlimit(Resource::Nofile, raised);
    if result.is_ok() && !short {
        info!(to, "raised the open-file limit (RLIMIT_NOFILE)");
        return;
    }
    let now = if result.is_ok() {
        to
    } else {
        limit.current.unwrap_or(0)
    };
    warn!(
        needed,
        limit = now,
        max_client_conn,
        upstreams,
        "RLIMIT_NOFILE is below max_client_conn plus every pool's connections; clients beyond \
         it cannot even be refused (accept fails): raise the hard limit (systemd LimitNOFILE=, \
         ulimit -Hn) or lower max_client_conn"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(current: Option<u64>, maximum: Option<u64>) -> Rlimit {
        Rlimit { current, maximum }
    }

    #[test]
    fn the_soft_limit_is_raised_only_as_far_as_needed_and_never_past_the_hard_one() {
        assert_eq!(
            plan(&limit(Some(20_000), Some(20_000)), 5_300),
            Plan::Enough
        );
        assert_eq!(plan(&limit(None, None), 5_300), Plan::Enough);
        assert_eq!(
            plan(&limit(Some(1024), Some(524_288)), 5_300),
            Plan::Raise(5_300)
        );
        assert_eq!(plan(&limit(Some(1024), None), 5_300), Plan::Raise(5_300));
        assert_eq!(
            plan(&limit(Some(1024), Some(4096)), 5_300),
            Plan::Short(4096)
        );
    }
}
