//! Transaction mode's LISTEN / UNLISTEN: answered by the proxy through the pool's listener
//! ([`crate::pool::listener`]), never sent to a pooled upstream, and the notifications that
//! come back, delivered to the client between requests.
//!
//! # Design
//!
//! A request made only of LISTEN / UNLISTEN statements from an idle client is answered here
//! with the replies PostgreSQL would send: for a simple Query, one CommandComplete per
//! statement and ReadyForQuery; for the extended protocol with the unnamed statement and
//! portal (pgjdbc's form), ParseComplete, BindComplete, ParameterDescription / NoData for
//! Describe, CommandComplete for Execute, ReadyForQuery for Sync. A LISTEN is answered once the
//! listener's own LISTEN committed, so notifications committed after the reply reach the
//! client. Named statements of LISTEN / UNLISTEN (asyncpg and tokio-postgres prepare every
//! statement by name) are kept here, so their Bind, Describe, Execute and Close are answered
//! the same way. A LISTEN anywhere else (inside a transaction block, beside other statements) cannot
//! be made exact and is refused with 0A000: a lone Query here, anything else by the statement
//! tracking's rewrite ([`crate::client::statements`]), which sees every request in a
//! transaction.

pub mod sql;

use std::collections::HashMap;

use bytes::BytesMut;

use crate::pool::Pool;
use crate::pool::listener::{Overflowed, Subscription};
use crate::protocol::backend::{self, Severity};
use crate::protocol::extended::{Bind, Execute, Kind, Parse, Target};
use crate::protocol::frame::header;
use sql::{Finding, Statement, find};

/// SQLSTATE `feature_not_supported`.
const FEATURE_NOT_SUPPORTED: &str = "0A000";

/// SQLSTATE `connection_failure`: the listener connection could not LISTEN.
const CONNECTION_FAILURE: &str = "08006";

/// What a client is told when its LISTEN cannot be made exact in transaction mode.
pub const REFUSED: &str = "LISTEN and UNLISTEN in transaction mode must be sent on their own \
                           (a Query of only LISTEN / UNLISTEN statements, outside a transaction \
                           block); use session mode to LISTEN inside a transaction";

/// A transaction-mode client's channels and waiting notifications.
pub struct ClientNotify {
    pool: Pool,
    /// Made at the client's first LISTEN; dropping it lets go of every channel.
    subscription: Option<Subscription>,
    /// LISTEN / UNLISTEN statements the client prepared under a name (asyncpg prepares every
    /// statement by name), answered here like the unnamed ones; at most [`MAX_NAMED`].
    named: HashMap<Vec<u8>, Statement>,
}

/// Most named LISTEN / UNLISTEN statements one client may hold.
const MAX_NAMED: usize = 100;

impl ClientNotify {
    /// Nothing listened on yet, for a client of `pool`.
    pub fn new(pool: Pool) -> Self {
        ClientNotify {
            pool,
            subscription: None,
            named: HashMap::new(),
        }
    }

    /// Points the client at `pool`'s listener instead (its pool was replaced by a reload),
    /// when it listens on nothing yet; false, and nothing changed, when it does (its channels
    /// live on the old pool's listener, so the client stays there).
    pub fn move_to(&mut self, pool: Pool) -> bool {
        if self.subscription.is_some() {
            return false;
        }
        self.pool = pool;
        true
    }

    /// The subscription, once the client listened on something.
    pub fn subscription(&self) -> Option<&Subscription> {
        self.subscription.as_ref()
    }

    /// Whether [`ClientNotify::answer`] may answer `request`: most requests name no LISTEN
    /// statement, and are let go without being read.
    pub fn may_answer(&self, request: &[u8], status: u8) -> bool {
        status == b'I' && (!self.named.is_empty() || sql::may_mention_listen(request))
    }

    /// [`ClientNotify::may_answer`] for a client that has none yet (it never sent a LISTEN
    /// or UNLISTEN request, so it holds no named one either).
    pub fn may_answer_first(request: &[u8], status: u8) -> bool {
        status == b'I' && sql::may_mention_listen(request)
    }

    /// Appends the notifications waiting for the client to `out`.
    pub fn deliver(&self, out: &mut BytesMut) -> Result<(), Overflowed> {
        match &self.subscription {
            Some(s) => s.take(out),
            None => Ok(()),
        }
    }

    /// Answers `request` (whole frames) when it is LISTEN / UNLISTEN only (or a lone Query
    /// mixing them with other statements, refused), appending the replies to `out`; returns
    /// how many sync points it answered, or `None`, changing nothing, for any other request.
    pub async fn answer(&mut self, request: &[u8], status: u8, out: &mut BytesMut) -> Option<u32> {
        if !self.may_answer(request, status) {
            return None;
        }
        match read(request, &self.named)? {
            Plan::Refuse => {
                backend::error_response(out, Severity::Error, FEATURE_NOT_SUPPORTED, REFUSED);
                backend::ready_for_query(out, status);
                Some(1)
            }
            Plan::Simple(statements) => {
                self.simple(&statements, out).await;
                backend::ready_for_query(out, status);
                Some(1)
            }
            Plan::Extended(frames) => Some(self.extended(&frames, out).await),
        }
    }

    async fn simple(&mut self, statements: &[Statement], out: &mut BytesMut) {
        let mut added = Vec::new();
        for statement in statements {
            if let Statement::Listen(channel) = statement {
                if !self.listens_on(channel) {
                    added.push(channel.as_str());
                }
            }
            if let Err(e) = self.run(statement).await {
                // The Query was one implicit transaction: what it listened on is undone.
                if let Some(s) = &self.subscription {
                    added.iter().for_each(|c| s.unlisten(c));
                }
                let message = e.to_string();
                backend::error_response(out, Severity::Error, CONNECTION_FAILURE, &message);
                return;
            }
            backend::command_complete(out, statement.tag());
        }
    }

    async fn extended(&mut self, frames: &[Frame], out: &mut BytesMut) -> u32 {
        let mut syncs = 0;
        let mut failed = false;
        let mut unnamed = None;
        let mut bound = None;
        for frame in frames {
            match frame {
                Frame::Sync => {
                    syncs += 1;
                    failed = false;
                    backend::ready_for_query(out, b'I');
                }
                _ if failed => {}
                Frame::Parse(name, s) if name.is_empty() => {
                    unnamed = Some(s.clone());
                    backend::empty_reply(out, b'1');
                }
                Frame::Parse(name, s) => {
                    self.named.insert(name.clone(), s.clone());
                    backend::empty_reply(out, b'1');
                }
                Frame::Bind(name) => {
                    bound = if name.is_empty() {
                        unnamed.clone()
                    } else {
                        self.named.get(name).cloned()
                    };
                    backend::empty_reply(out, b'2');
                }
                Frame::Close(name) => {
                    self.named.remove(name);
                    backend::empty_reply(out, b'3');
                }
                Frame::Describe(Kind::Statement) => {
                    backend::empty_reply(out, b't');
                    backend::empty_reply(out, b'n');
                }
                Frame::Describe(Kind::Portal) => backend::empty_reply(out, b'n'),
                Frame::Execute => {
                    let Some(s) = bound.clone() else { continue };
                    match self.run(&s).await {
                        Ok(()) => backend::command_complete(out, s.tag()),
                        Err(e) => {
                            let message = e.to_string();
                            backend::error_response(
                                out,
                                Severity::Error,
                                CONNECTION_FAILURE,
                                &message,
                            );
                            failed = true;
                        }
                    }
                }
                Frame::Flush => {}
            }
        }
        syncs
    }

    fn listens_on(&self, channel: &str) -> bool {
        self.subscription
            .as_ref()
            .is_some_and(|s| s.listens_on(channel))
    }

    async fn run(
        &mut self,
        statement: &Statement,
    ) -> Result<(), crate::pool::listener::ListenError> {
        match statement {
            Statement::Listen(channel) => {
                let pool = &self.pool;
                let s = self
                    .subscription
                    .get_or_insert_with(|| pool.listener().subscribe());
                s.listen(channel).await
            }
            Statement::Unlisten(channel) => {
                if let Some(s) = &self.subscription {
                    s.unlisten(channel);
                }
                Ok(())
            }
            Statement::UnlistenAll => {
                if let Some(s) = &self.subscription {
                    s.unlisten_all();
                }
                Ok(())
            }
        }
    }
}

/// How a request is answered.
enum Plan {
    Refuse,
    Simple(Vec<Statement>),
    Extended(Vec<Frame>),
}

/// One extended-protocol message of a LISTEN request, as far as its reply needs.
enum Frame {
    /// The statement's name (empty: unnamed) and what it does.
    Parse(Vec<u8>, Statement),
    /// Binds the unnamed portal to the statement of that name.
    Bind(Vec<u8>),
    /// Closes a named LISTEN statement.
    Close(Vec<u8>),
    Describe(Kind),
    Execute,
    Flush,
    Sync,
}

/// Reads a request into a plan, or `None` when it is not one this file answers. `named` are
/// the client's named LISTEN statements from earlier requests.
fn read(request: &[u8], named: &HashMap<Vec<u8>, Statement>) -> Option<Plan> {
    let (tag, len) = header(request)?;
    if tag == b'Q' {
        if request.len() != 1 + len {
            return None;
        }
        let text = request.get(5..)?;
        let text = text.strip_suffix(&[0]).unwrap_or(text);
        return match find(text) {
            Finding::None => None,
            Finding::Only(statements) => Some(Plan::Simple(statements)),
            Finding::Mixed => Some(Plan::Refuse),
        };
    }
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some((tag, len)) = header(&request[at..]) {
        let body = request.get(at + 5..at + 1 + len)?;
        at += 1 + len;
        // A statement used here must be a LISTEN parsed in this request or named earlier.
        let ours = |name: &[u8]| {
            (!name.is_empty() && named.contains_key(name))
                || frames
                    .iter()
                    .any(|f| matches!(f, Frame::Parse(n, _) if n.as_slice() == name))
        };
        let bound = frames.iter().any(|f| matches!(f, Frame::Bind(_)));
        frames.push(match tag {
            b'P' => {
                let parse = Parse::read(body).ok()?;
                let room = parse.name.is_empty() || named.len() < MAX_NAMED;
                match find(parse.query) {
                    Finding::Only(mut one) if one.len() == 1 && room => {
                        Frame::Parse(parse.name.to_vec(), one.pop()?)
                    }
                    _ => return None,
                }
            }
            b'B' => {
                let bind = Bind::read(body).ok()?;
                if !bind.portal.is_empty() || !ours(bind.statement) {
                    return None;
                }
                Frame::Bind(bind.statement.to_vec())
            }
            b'C' => match Target::read(body).ok()? {
                Target {
                    kind: Kind::Statement,
                    name,
                } if !name.is_empty() && ours(name) => Frame::Close(name.to_vec()),
                _ => return None,
            },
            b'D' => match Target::read(body).ok()? {
                Target {
                    kind: Kind::Statement,
                    name,
                } if ours(name) => Frame::Describe(Kind::Statement),
                Target {
                    kind: Kind::Portal,
                    name: [],
                } if bound => Frame::Describe(Kind::Portal),
                _ => return None,
            },
            b'E' => match Execute::read(body).ok()? {
                Execute { portal: [], .. } if bound => Frame::Execute,
                _ => return None,
            },
            b'H' => Frame::Flush,
            b'S' => Frame::Sync,
            _ => return None,
        });
    }
    // asyncpg prepares with Parse, Describe, Flush and binds in a request of its own.
    let ends_in_sync = matches!(frames.last(), Some(Frame::Sync | Frame::Flush));
    let listens = frames
        .iter()
        .any(|f| !matches!(f, Frame::Sync | Frame::Flush));
    (listens && ends_in_sync && at == request.len()).then_some(Plan::Extended(frames))
}
