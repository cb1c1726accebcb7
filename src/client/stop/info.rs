//! What the registry keeps about each client for `SHOW CLIENTS`.

use std::net::SocketAddr;
use std::time::SystemTime;

/// Facts of one client connection, fixed at login.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The registry's id: in the client's log span, `SHOW CLIENTS` and `KILL`.
    pub id: u64,
    /// Who it is and what it asked for (see [`Names`]).
    pub names: Names,
    /// Its address.
    pub peer: SocketAddr,
    /// The proxy's address on that connection.
    pub local: Option<SocketAddr>,
    /// When it connected.
    pub connected_at: SystemTime,
    /// Whether it uses TLS.
    pub tls: bool,
}

impl ClientInfo {
    /// The local user it logged in as.
    pub fn user(&self) -> &str {
        self.names.user()
    }

    /// The database it asked for.
    pub fn database(&self) -> &str {
        self.names.database()
    }

    /// The `application_name` it sent, empty when none.
    pub fn application_name(&self) -> &str {
        self.names.application_name()
    }
}

/// A client's user, database and `application_name`, in one allocation: every connected
/// client keeps them for `SHOW CLIENTS`, so three strings each would cost it two more heap
/// blocks and their headers.
#[derive(Debug, Clone)]
pub struct Names {
    /// The three, one after the other.
    text: Box<str>,
    /// Where the user ends and the database begins (`u32`: the names come from a startup
    /// packet, far shorter, and the entry is kept for every connected client).
    user_end: u32,
    /// Where the database ends and the `application_name` begins.
    database_end: u32,
}

impl Names {
    /// The names of a client that logged in as `user` to `database` as `application_name`.
    pub fn new(user: &str, database: &str, application_name: &str) -> Names {
        // Past u32 (never, from a startup packet) the names are cut to nothing rather than
        // mis-split.
        let (Ok(user_end), Ok(database_end)) = (
            u32::try_from(user.len()),
            u32::try_from(user.len() + database.len()),
        ) else {
            return Names::new("", "", "");
        };
        let text = [user, database, application_name].concat().into_boxed_str();
        Names {
            text,
            user_end,
            database_end,
        }
    }

    fn user(&self) -> &str {
        &self.text[..self.user_end as usize]
    }

    fn database(&self) -> &str {
        &self.text[self.user_end as usize..self.database_end as usize]
    }

    fn application_name(&self) -> &str {
        &self.text[self.database_end as usize..]
    }
}

/// What a client is doing, with PgBouncer's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientState {
    /// Holding an upstream (`cl_active`).
    Active = 0,
    /// A complete request waits for an upstream (`cl_waiting`).
    Waiting = 1,
    /// Neither (`cl_idle`).
    Idle = 2,
}

impl ClientState {
    pub(super) fn from_u8(n: u8) -> ClientState {
        match n {
            0 => ClientState::Active,
            1 => ClientState::Waiting,
            _ => ClientState::Idle,
        }
    }

    /// Its name in `SHOW CLIENTS`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Active => "active",
            ClientState::Waiting => "waiting",
            ClientState::Idle => "idle",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Names;

    #[test]
    fn names_give_back_each_part_whole_even_empty_or_multibyte() {
        let n = Names::new("app", "bench", "");
        assert_eq!(
            (n.user(), n.database(), n.application_name()),
            ("app", "bench", "")
        );
        let n = Names::new("", "dé", "wörker ✓");
        assert_eq!(
            (n.user(), n.database(), n.application_name()),
            ("", "dé", "wörker ✓")
        );
        let n = Names::new("u", "", "a");
        assert_eq!(
            (n.user(), n.database(), n.application_name()),
            ("u", "", "a")
        );
    }
}
