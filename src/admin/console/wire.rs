//! What the console writes: result tables (RowDescription, DataRows, CommandComplete),
//! notices and errors, in the simple-query protocol's shapes psql and PgBouncer-aware
//! scrapers read.

use std::time::SystemTime;

use bytes::{BufMut, BytesMut};

/// OID of `int8`: counts are sent with it so psql right-aligns them and scrapers parse them.
const INT8: u32 = 20;
/// OID of `text`.
const TEXT: u32 = 25;

/// A column's type as the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A number (`int8`).
    Int,
    /// Anything else (`text`).
    Text,
}

/// A result table being built: named columns, then rows of cells in the same order.
#[derive(Debug)]
pub struct Table {
    columns: Vec<(&'static str, Kind)>,
    rows: Vec<Vec<Option<String>>>,
}

impl Table {
    /// A table with `columns`.
    pub fn new(columns: &[(&'static str, Kind)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; cells beyond the columns are dropped, missing ones are NULL.
    pub fn row(&mut self, mut cells: Vec<Option<String>>) {
        cells.resize(self.columns.len(), None);
        self.rows.push(cells);
    }

    /// Writes RowDescription, every DataRow and CommandComplete `SHOW`.
    pub fn write(&self, out: &mut BytesMut) {
        message(out, b'T', |b| {
            b.put_u16(u16::try_from(self.columns.len()).unwrap_or(u16::MAX));
            for (name, kind) in &self.columns {
                cstr(b, name);
                b.put_u32(0); // no table
                b.put_u16(0); // no column number
                let (oid, len) = match kind {
                    Kind::Int => (INT8, 8),
                    Kind::Text => (TEXT, -1),
                };
                b.put_u32(oid);
                b.put_i16(len);
                b.put_i32(-1); // no type modifier
                b.put_u16(0); // text format
            }
        });
        for row in &self.rows {
            message(out, b'D', |b| {
                b.put_u16(u16::try_from(row.len()).unwrap_or(u16::MAX));
                for cell in row {
                    match cell {
                        Some(v) => {
                            b.put_i32(i32::try_from(v.len()).unwrap_or(i32::MAX));
                            b.put_slice(v.as_bytes());
                        }
                        None => b.put_i32(-1),
                    }
                }
            });
        }
        command_complete(out, "SHOW");
    }
}

/// A text cell.
pub fn text(v: impl Into<String>) -> Option<String> {
    Some(v.into())
}

/// A number cell.
pub fn int(v: impl std::fmt::Display) -> Option<String> {
    Some(v.to_string())
}

/// A time cell, as PgBouncer shows them (`2026-01-31 12:00:00 UTC`); NULL when absent.
pub fn time(at: Option<SystemTime>) -> Option<String> {
    let at = at?;
    let iso = humantime::format_rfc3339_seconds(at).to_string();
    Some(format!(
        "{} UTC",
        iso.trim_end_matches('Z').replacen('T', " ", 1)
    ))
}

/// A yes/no cell in PgBouncer's way (`0`/`1` as int).
pub fn flag(v: bool) -> Option<String> {
    int(u8::from(v))
}

/// CommandComplete with `tag`.
pub fn command_complete(out: &mut BytesMut, tag: &str) {
    message(out, b'C', |b| cstr(b, tag));
}

/// A NOTICE (severity, SQLSTATE 00000, message).
pub fn notice(out: &mut BytesMut, text: &str) {
    fields(out, b'N', "NOTICE", "00000", text);
}

/// An ERROR (the session goes on).
pub fn error(out: &mut BytesMut, code: &str, text: &str) {
    fields(out, b'E', "ERROR", code, text);
}

/// A FATAL error (the session ends after it).
pub fn fatal(out: &mut BytesMut, code: &str, text: &str) {
    fields(out, b'E', "FATAL", code, text);
}

/// ParameterStatus.
pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    message(out, b'S', |b| {
        cstr(b, name);
        cstr(b, value);
    });
}

/// BackendKeyData.
pub fn backend_key_data(out: &mut BytesMut, pid: i32, secret: i32) {
    message(out, b'K', |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

/// EmptyQueryResponse (a Query with no statement in it).
pub fn empty_query(out: &mut BytesMut) {
    message(out, b'I', |_| {});
}

/// ReadyForQuery, always idle: the console has no transactions.
pub fn ready(out: &mut BytesMut) {
    message(out, b'Z', |b| b.put_u8(b'I'));
}

fn fields(out: &mut BytesMut, tag: u8, severity: &str, code: &str, text: &str) {
    message(out, tag, |b| {
        for (field, value) in [
            (b'S', severity),
            (b'V', severity),
            (b'C', code),
            (b'M', text),
        ] {
            b.put_u8(field);
            cstr(b, value);
        }
        b.put_u8(0);
    });
}

fn message(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let at = out.len();
    out.put_u32(0);
    body(out);
    let len = u32::try_from(out.len() - at).unwrap_or(u32::MAX);
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn cstr(out: &mut BytesMut, s: &str) {
    // A NUL inside would end the string early on the client's side; none of ours has one,
    // but a name from the config could, so it is cut there rather than corrupt the frame.
    let s = s.split('\0').next().unwrap_or_default();
    out.put_slice(s.as_bytes());
    out.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use fallible_iterator::FallibleIterator;
    use postgres_protocol::message::backend::Message;

    #[test]
    fn a_table_parses_with_the_reference_client_parser() {
        let mut t = Table::new(&[("database", Kind::Text), ("cl_active", Kind::Int)]);
        t.row(vec![text("app"), int(3)]);
        t.row(vec![text("other")]);
        let mut out = BytesMut::new();
        t.write(&mut out);
        let Ok(Some(Message::RowDescription(desc))) = Message::parse(&mut out) else {
            panic!("no RowDescription");
        };
        let fields: Vec<_> = desc.fields().collect().unwrap();
        assert_eq!(fields[1].name(), "cl_active");
        assert_eq!(fields[1].type_oid(), INT8);
        let Ok(Some(Message::DataRow(row))) = Message::parse(&mut out) else {
            panic!("no DataRow");
        };
        let buf = row.buffer();
        let cells: Vec<_> = row.ranges().collect().unwrap();
        assert_eq!(&buf[cells[1].clone().unwrap()], b"3");
        let Ok(Some(Message::DataRow(row))) = Message::parse(&mut out) else {
            panic!("no second DataRow");
        };
        let cells: Vec<_> = row.ranges().collect().unwrap();
        assert_eq!(cells[1], None, "a missing cell is NULL");
        assert!(matches!(
            Message::parse(&mut out),
            Ok(Some(Message::CommandComplete(_)))
        ));
    }

    #[test]
    fn times_read_like_pgbouncers() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(86_400 + 61);
        assert_eq!(time(Some(at)).unwrap(), "1970-01-02 00:01:01 UTC");
    }
}
