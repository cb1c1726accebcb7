//! The rewrite of one client request for the upstream serving it (see [`super`] for what is
//! changed and why).

use std::ops::Range;

use bytes::BytesMut;

use super::replies::Step;
use super::sql::{Command, Sketch, Unconfined, examine_sketched};
use super::{ClientStatements, Marks, StatementId, UpstreamStatements};
use crate::client::notify::sql::listens;
use crate::protocol::ProtocolError;
use crate::protocol::extended::{
    Bind, Execute, Kind, Parse, Target, write_bind, write_close_statement,
    write_describe_statement, write_parse, write_query,
};
use crate::protocol::frame::header;

/// SQLSTATE `invalid_sql_statement_name`, PostgreSQL's for an unknown prepared statement.
pub const INVALID_SQL_STATEMENT_NAME: &str = "26000";

/// SQLSTATE `feature_not_supported`.
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";

/// A statement name the proxy never prepares: describing it fails on any upstream.
const PROBE_STATEMENT: &str = "pglease_probe";

/// A query that fails to parse on any upstream and runs nothing.
const PROBE_QUERY: &str = "pglease refused this query";

/// Why a message is answered with an error instead of running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A Bind or Describe of a name the client never prepared (or closed).
    Missing(Box<[u8]>),
    /// A Bind or Describe of the unnamed statement, which this client did not parse on this
    /// upstream.
    MissingUnnamed,
    /// SQL `PREPARE`, `EXECUTE` or `DEALLOCATE name` in transaction mode.
    SqlCommand,
    /// Session state that would outlive the client's transaction on a shared upstream.
    Unconfined(Unconfined),
    /// A new name from a client that already holds [`super::MAX_CLIENT_STATEMENTS`].
    TooMany,
    /// LISTEN or UNLISTEN anywhere but on its own outside a transaction block (see
    /// [`crate::client::notify`]).
    Listen,
}

impl Refusal {
    /// The SQLSTATE the client gets.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Missing(_) | Refusal::MissingUnnamed => INVALID_SQL_STATEMENT_NAME,
            Refusal::SqlCommand | Refusal::Unconfined(_) | Refusal::Listen => FEATURE_NOT_SUPPORTED,
            Refusal::TooMany => "53400",
        }
    }

    /// The message the client gets, PostgreSQL's own where PostgreSQL has one.
    pub fn message(&self) -> String {
        match self {
            Refusal::Missing(name) => format!(
                "prepared statement \"{}\" does not exist",
                String::from_utf8_lossy(name)
            ),
            Refusal::MissingUnnamed => "unnamed prepared statement does not exist".into(),
            Refusal::SqlCommand => "SQL PREPARE, EXECUTE and DEALLOCATE of a named statement \
                                    are not supported in transaction mode: use your driver's \
                                    protocol-level prepared statements, or session mode"
                .into(),
            Refusal::Unconfined(what) => what.message().into(),
            Refusal::Listen => crate::client::notify::REFUSED.into(),
            Refusal::TooMany => format!(
                "too many prepared statements: a client may hold at most {}; close the ones \
                 it no longer uses",
                super::MAX_CLIENT_STATEMENTS
            ),
        }
    }
}

impl ClientStatements {
    /// Rewrites one client request (whole frames) for `upstream`. Returns `false` when the
    /// request goes upstream as it is (nothing was written to `out`), `true` when `out` holds
    /// what must be sent instead. Replies the proxy owes the client at once are appended to
    /// `to_client`. `status` is the client's transaction status (`I`, `T`, `E`) before the
    /// request. On a protocol error nothing has changed and nothing may be sent.
    pub fn rewrite(
        &mut self,
        request: &[u8],
        status: u8,
        upstream: &mut UpstreamStatements,
        out: &mut BytesMut,
        to_client: &mut BytesMut,
    ) -> Result<bool, ProtocolError> {
        validate(request)?;
        out.clear();
        let mut pass = Rewrite {
            client: self,
            up: upstream,
            out,
            request,
            from: 0,
            changed: false,
            status,
        };
        let mut at = 0;
        while let Some((tag, len)) = header(&request[at..]) {
            let range = at..at + 1 + len;
            pass.frame(tag, range.clone())?;
            at = range.end;
        }
        let (changed, from) = (pass.changed, pass.from);
        if changed {
            out.extend_from_slice(&request[from..]);
        }
        upstream.write_due(to_client);
        Ok(changed)
    }
}

/// Checks every frame of the request before anything changes, so an error leaves registry and
/// cache as they were.
fn validate(request: &[u8]) -> Result<(), ProtocolError> {
    let mut at = 0;
    while at < request.len() {
        let (tag, len) = header(&request[at..]).ok_or(ProtocolError::Malformed("request"))?;
        let body = request
            .get(at + 5..at + 1 + len)
            .filter(|_| len >= 4)
            .ok_or(ProtocolError::BadLength { tag, len })?;
        match tag {
            b'P' => drop(Parse::read(body)?),
            b'B' => drop(Bind::read(body)?),
            b'D' | b'C' => drop(Target::read(body)?),
            b'E' => drop(Execute::read(body)?),
            _ => {}
        }
        at += 1 + len;
    }
    Ok(())
}

/// One rewrite in progress.
struct Rewrite<'a> {
    client: &'a mut ClientStatements,
    up: &'a mut UpstreamStatements,
    out: &'a mut BytesMut,
    request: &'a [u8],
    /// Start of the request bytes not yet copied to `out` (once anything changed).
    from: usize,
    changed: bool,
    status: u8,
}

impl Rewrite<'_> {
    fn push(&mut self, step: Step) {
        self.up.replies.push(step, &mut self.up.present);
    }

    /// Leaves the frame at `range` out of the request sent: what precedes it is copied, and
    /// whatever the caller writes next takes its place.
    fn splice(&mut self, range: &Range<usize>) {
        self.out
            .extend_from_slice(&self.request[self.from..range.start]);
        self.from = range.end;
        self.changed = true;
    }

    fn frame(&mut self, tag: u8, range: Range<usize>) -> Result<(), ProtocolError> {
        let request = self.request;
        let body = &request[range.start + 5..range.end];
        if self.client.skipping {
            if tag == b'S' {
                self.client.skipping = false;
                self.push(Step::Sync);
            } else {
                self.splice(&range);
            }
            return Ok(());
        }
        match tag {
            b'P' => self.parse(Parse::read(body)?, &range),
            b'B' => {
                let bind = Bind::read(body)?;
                self.use_statement(bind.statement, &range, |out, name| {
                    write_bind(out, &bind, name.as_bytes())
                });
            }
            b'D' => match Target::read(body)? {
                Target {
                    kind: Kind::Statement,
                    name,
                } => self.use_statement(name, &range, |out, name| {
                    write_describe_statement(out, name)
                }),
                _ => self.push(Step::Pass(1)),
            },
            b'C' => self.close(Target::read(body)?, &range),
            b'E' | b'S' | b'Q' | b'F' => {
                let step = match tag {
                    b'E' => Step::Pass(1),
                    b'S' => Step::Sync,
                    _ => Step::Ready,
                };
                if tag == b'Q' {
                    let text = body.strip_suffix(&[0]).unwrap_or(body);
                    if let Err(refusal) = self.sql(text) {
                        self.refuse(&range, refusal, false);
                        return Ok(());
                    }
                }
                if tag == b'F' {
                    // A function called by OID: the lexer cannot tell which (set_config is
                    // one).
                    self.client.runs(Marks {
                        state: true,
                        settings: true,
                    });
                }
                self.push(step);
            }
            // Flush and the copy messages are answered by nothing of their own.
            _ => {}
        }
        Ok(())
    }

    /// Looks at a query text for the commands that touch prepared statements, for state
    /// that cannot be confined to the client and for LISTEN; says why when it must be
    /// refused. Otherwise says what the text mentions that calls for checks after it runs
    /// (unconfined state, `set_config`), and notes them for this request.
    fn sql(&mut self, text: &[u8]) -> Result<Marks, Refusal> {
        // One pass over the text serves every check; a text with none of their words (almost
        // every one) ends here.
        let sketch = Sketch::of(text);
        if sketch.is_empty() {
            return Ok(Marks::default());
        }
        let (command, mentions) = examine_sketched(text, sketch);
        let marks = Marks {
            state: mentions,
            // A `U&"…"` identifier may spell set_config with escapes.
            settings: sketch.set_config() || sketch.unicode(),
        };
        self.client.runs(marks);
        match command {
            Command::Other => {}
            Command::Named => return Err(Refusal::SqlCommand),
            Command::Unconfined(what) => return Err(Refusal::Unconfined(what)),
            Command::DropsAll => {
                // Safe whatever becomes of the command: a statement the cache wrongly counts
                // as absent is closed before it is prepared again.
                self.up.present.clear();
                if self.status != b'E' {
                    self.client.by_name.clear();
                    self.client.mentioning.clear();
                }
            }
        }
        if listens(text, sketch) {
            return Err(Refusal::Listen);
        }
        Ok(marks)
    }

    fn parse(&mut self, parse: Parse<'_>, range: &Range<usize>) {
        let marks = match self.sql(parse.query) {
            Ok(marks) => marks,
            Err(refusal) => {
                self.refuse(range, refusal, true);
                return;
            }
        };
        if self.client.full_for(parse.name) && !parse.name.is_empty() {
            self.refuse(range, Refusal::TooMany, true);
            return;
        }
        if parse.name.is_empty() {
            self.client.unnamed_marks = marks;
            self.up.present.unnamed_owner = Some(self.client.id);
            self.push(Step::Parse {
                id: None,
                swallow: false,
            });
            return;
        }
        let id = self
            .client
            .insert(parse.name, parse.query, parse.raw_types())
            .id;
        if marks.any() {
            self.client.mentioning.insert(parse.name.into(), marks);
        }
        self.splice(range);
        // In a failed transaction PostgreSQL refuses the Parse (25P02): it is sent, so the
        // client hears that, and the cache forgets the statement the added Close dropped.
        if self.status != b'E' && self.up.present.touch(&id) {
            self.push(Step::Owed(b'1'));
        } else {
            prepare(self.up, self.out, id, parse.query, parse.raw_types(), false);
        }
    }

    /// A Bind or Describe of the statement the client calls `name`: makes sure it exists
    /// upstream, then has `write` re-encode the message under its upstream name.
    fn use_statement(
        &mut self,
        name: &[u8],
        range: &Range<usize>,
        write: impl FnOnce(&mut BytesMut, &str),
    ) {
        if name.is_empty() {
            if self.up.present.unnamed_owner == Some(self.client.id) {
                let marks = self.client.unnamed_marks;
                self.client.runs(marks);
                self.push(Step::Pass(1));
            } else {
                self.refuse(range, Refusal::MissingUnnamed, true);
            }
            return;
        }
        let Some(id) = self.client.by_name.get(name).map(|s| s.id) else {
            self.refuse(range, Refusal::Missing(name.into()), true);
            return;
        };
        // SipHash of the name only when some statement mentions anything.
        if !self.client.mentioning.is_empty() {
            if let Some(&marks) = self.client.mentioning.get(name) {
                self.client.runs(marks);
            }
        }
        self.splice(range);
        if !self.up.present.touch(&id) {
            if let Some(s) = self.client.by_name.get(name) {
                prepare(self.up, self.out, id, &s.query, &s.raw_types, true);
            }
        }
        write(self.out, id.upstream_name().as_str());
        self.push(Step::Pass(1));
    }

    fn close(&mut self, target: Target<'_>, range: &Range<usize>) {
        match target {
            Target {
                kind: Kind::Statement,
                name: [],
            } => {
                self.up.present.unnamed_owner = None;
                self.push(Step::Pass(1));
            }
            Target {
                kind: Kind::Statement,
                name,
            } => {
                // Only the client's name goes: other clients may share the upstream statement.
                self.client.by_name.remove(name);
                self.client.forget_mention(name);
                self.splice(range);
                self.push(Step::Owed(b'3'));
            }
            Target {
                kind: Kind::Portal, ..
            } => self.push(Step::Pass(1)),
        }
    }

    /// Replaces the frame at `range` with a probe that fails upstream, so PostgreSQL rolls back
    /// and skips as it would for the client's own error; the client gets `refusal` instead.
    fn refuse(&mut self, range: &Range<usize>, refusal: Refusal, extended: bool) {
        self.splice(range);
        if extended {
            write_describe_statement(self.out, PROBE_STATEMENT);
            self.push(Step::Refused {
                refusal,
                extended: true,
            });
            self.client.skipping = true;
        } else {
            write_query(self.out, PROBE_QUERY);
            self.push(Step::Refused {
                refusal,
                extended: false,
            });
            self.push(Step::Ready);
        }
    }
}

/// Writes what prepares statement `id` upstream: the Close of an evicted statement when the
/// cache is full, a Close of `id` itself (harmless when absent, and it makes the Parse succeed
/// when the cache was wrong), and the Parse under its upstream name, whose ParseComplete is
/// swallowed when the proxy `added` it.
fn prepare(
    up: &mut UpstreamStatements,
    out: &mut BytesMut,
    id: StatementId,
    query: &[u8],
    raw_types: &[u8],
    added: bool,
) {
    if let Some(evicted) = up.present.insert(id) {
        write_close_statement(out, evicted.upstream_name().as_str());
        up.replies.push(Step::AddedClose, &mut up.present);
    }
    let name = id.upstream_name();
    write_close_statement(out, name.as_str());
    up.replies.push(Step::AddedClose, &mut up.present);
    write_parse(out, name.as_str().as_bytes(), query, raw_types);
    up.replies.push(
        Step::Parse {
            id: Some(id),
            swallow: added,
        },
        &mut up.present,
    );
}
