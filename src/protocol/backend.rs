//! Backend messages the proxy writes itself: the login replies, the parameters and key it
//! hands a client, ReadyForQuery, and ErrorResponse for errors the proxy raises.

use bytes::{BufMut, BytesMut};

/// Writes one message: tag, then a length patched in after `body` has written the contents.
fn message(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_u32(0);
    body(buf);
    let len = (buf.len() - at) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn cstr(buf: &mut BytesMut, s: &str) {
    // A NUL inside would end the field early and shift every later field; drop it.
    buf.extend(s.bytes().filter(|&b| b != 0));
    buf.put_u8(0);
}

/// AuthenticationOk.
pub fn auth_ok(buf: &mut BytesMut) {
    message(buf, b'R', |b| b.put_i32(0));
}

/// AuthenticationMD5Password with the salt the client must hash with.
pub fn auth_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    message(buf, b'R', |b| {
        b.put_i32(5);
        b.put_slice(&salt);
    });
}

/// AuthenticationSASL listing the mechanisms offered.
pub fn auth_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    message(buf, b'R', |b| {
        b.put_i32(10);
        for m in mechanisms {
            cstr(b, m);
        }
        b.put_u8(0);
    });
}

/// AuthenticationSASLContinue carrying the server-first-message.
pub fn auth_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    message(buf, b'R', |b| {
        b.put_i32(11);
        b.put_slice(data);
    });
}

/// AuthenticationSASLFinal carrying the server-final-message.
pub fn auth_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    message(buf, b'R', |b| {
        b.put_i32(12);
        b.put_slice(data);
    });
}

/// ParameterStatus.
pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    message(buf, b'S', |b| {
        cstr(b, name);
        cstr(b, value);
    });
}

/// BackendKeyData with the proxy-issued key (never an upstream's).
pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    message(buf, b'K', |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

/// NegotiateProtocolVersion: we speak 3.0 and none of the requested `_pq_` options.
pub fn negotiate_protocol_version<'a>(buf: &mut BytesMut, options: impl Iterator<Item = &'a str>) {
    message(buf, b'v', |b| {
        b.put_i32(0);
        let at = b.len();
        b.put_i32(0);
        let mut n = 0i32;
        for o in options {
            cstr(b, o);
            n += 1;
        }
        b[at..at + 4].copy_from_slice(&n.to_be_bytes());
    });
}

/// ReadyForQuery with a transaction status (`I`, `T`, `E`).
pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    message(buf, b'Z', |b| b.put_u8(status));
}

/// CommandComplete with its tag (`LISTEN`, `UNLISTEN`), for statements the proxy answers.
pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    message(buf, b'C', |b| cstr(b, tag));
}

/// The replies to the extended-protocol messages of a statement the proxy answers itself:
/// ParseComplete (`1`), BindComplete (`2`), NoData (`n`), and ParameterDescription (`t`) with
/// no parameters.
pub fn empty_reply(buf: &mut BytesMut, tag: u8) {
    message(buf, tag, |b| {
        if tag == b't' {
            b.put_u16(0);
        }
    });
}

/// How bad an error the proxy reports is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The request failed; the client stays connected.
    Error,
    /// The connection is closed after this message.
    Fatal,
}

/// ErrorResponse with severity, SQLSTATE and message.
pub fn error_response(buf: &mut BytesMut, severity: Severity, code: &str, msg: &str) {
    error_response_detail(buf, severity, code, msg, None);
}

/// ErrorResponse with severity, SQLSTATE, message and, when given, a DETAIL line (where
/// PostgreSQL itself sends one, clients and tests expect the same).
pub fn error_response_detail(
    buf: &mut BytesMut,
    severity: Severity,
    code: &str,
    msg: &str,
    detail: Option<&str>,
) {
    let sev = match severity {
        Severity::Error => "ERROR",
        Severity::Fatal => "FATAL",
    };
    message(buf, b'E', |b| {
        for (field, value) in [(b'S', sev), (b'V', sev), (b'C', code), (b'M', msg)] {
            b.put_u8(field);
            cstr(b, value);
        }
        if let Some(detail) = detail {
            b.put_u8(b'D');
            cstr(b, detail);
        }
        b.put_u8(0);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::message::backend::Message;

    #[test]
    fn messages_parse_with_the_reference_client_parser() {
        let mut buf = BytesMut::new();
        auth_ok(&mut buf);
        parameter_status(&mut buf, "server_version", "15.1");
        backend_key_data(&mut buf, 7, 9);
        error_response(
            &mut buf,
            Severity::Fatal,
            "28P01",
            "password authentication failed",
        );
        ready_for_query(&mut buf, b'I');
        assert!(matches!(
            Message::parse(&mut buf),
            Ok(Some(Message::AuthenticationOk))
        ));
        match Message::parse(&mut buf) {
            Ok(Some(Message::ParameterStatus(p))) => {
                assert_eq!(
                    (p.name().unwrap(), p.value().unwrap()),
                    ("server_version", "15.1")
                )
            }
            _ => panic!("ParameterStatus"),
        }
        match Message::parse(&mut buf) {
            Ok(Some(Message::BackendKeyData(k))) => {
                assert_eq!((k.process_id(), k.secret_key()), (7, 9))
            }
            _ => panic!("BackendKeyData"),
        }
        assert!(matches!(
            Message::parse(&mut buf),
            Ok(Some(Message::ErrorResponse(_)))
        ));
        match Message::parse(&mut buf) {
            Ok(Some(Message::ReadyForQuery(r))) => assert_eq!(r.status(), b'I'),
            _ => panic!("ReadyForQuery"),
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn sasl_offer_lists_mechanisms() {
        let mut buf = BytesMut::new();
        auth_sasl(&mut buf, &["SCRAM-SHA-256"]);
        match Message::parse(&mut buf) {
            Ok(Some(Message::AuthenticationSasl(s))) => {
                use fallible_iterator::FallibleIterator;
                let m: Vec<&str> = s.mechanisms().collect().unwrap();
                assert_eq!(m, ["SCRAM-SHA-256"]);
            }
            _ => panic!("AuthenticationSASL"),
        }
    }
}
