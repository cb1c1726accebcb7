//! The first packet a client sends: a StartupMessage, or one of the special requests that
//! share its untagged framing (SSLRequest, GSSENCRequest, CancelRequest).

use super::ProtocolError;

/// PostgreSQL's own limit for a startup packet; anything longer is hostile.
pub const MAX_STARTUP_LEN: usize = 10_000;

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;

/// One parsed startup-phase packet.
#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    /// The client asks for TLS; it is answered `N` until TLS is configured.
    Ssl,
    /// The client asks for GSSAPI encryption; always answered `N`.
    GssEnc,
    /// Cancel the query running for the session with this proxy-issued key.
    Cancel { pid: i32, secret: i32 },
    /// A protocol 3.x startup with its parameters (user, database, options, ...).
    Startup(Startup),
}

/// A StartupMessage's contents.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Startup {
    /// The minor protocol version the client asked for; above 0 it is told we speak 3.0.
    pub minor: u16,
    /// Parameters in the order sent; `_pq_.` protocol options included.
    pub params: Vec<(String, String)>,
}

impl Startup {
    /// A parameter's value, if the client sent it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The user name; PostgreSQL requires it.
    pub fn user(&self) -> Option<&str> {
        self.get("user").filter(|u| !u.is_empty())
    }

    /// The database, defaulting to the user name as PostgreSQL does.
    pub fn database(&self) -> Option<&str> {
        self.get("database")
            .filter(|d| !d.is_empty())
            .or_else(|| self.user())
    }

    /// Protocol options (`_pq_.*`) the client asked for; we support none of them.
    pub fn protocol_options(&self) -> impl Iterator<Item = &str> {
        self.params
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| k.starts_with("_pq_."))
    }
}

/// Parses the packet at the front of `buf`. `Ok(None)` means more bytes are needed; otherwise
/// the packet and how many bytes it used.
pub fn parse(buf: &[u8]) -> Result<Option<(StartupPacket, usize)>, ProtocolError> {
    let Some(len) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if !(8..=MAX_STARTUP_LEN).contains(&len) {
        return Err(ProtocolError::BadLength { tag: 0, len });
    }
    let Some(packet) = buf.get(..len) else {
        return Ok(None);
    };
    let code = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    let body = &packet[8..];
    let parsed = match code {
        SSL_REQUEST if body.is_empty() => StartupPacket::Ssl,
        GSSENC_REQUEST if body.is_empty() => StartupPacket::GssEnc,
        CANCEL_REQUEST => {
            let key: &[u8; 8] = body
                .try_into()
                .map_err(|_| ProtocolError::Malformed("CancelRequest"))?;
            StartupPacket::Cancel {
                pid: i32::from_be_bytes([key[0], key[1], key[2], key[3]]),
                secret: i32::from_be_bytes([key[4], key[5], key[6], key[7]]),
            }
        }
        _ => {
            let (major, minor) = ((code >> 16) as u16, code as u16);
            if major != 3 {
                return Err(ProtocolError::UnsupportedVersion { major, minor });
            }
            StartupPacket::Startup(Startup {
                minor,
                params: parse_params(body)?,
            })
        }
    };
    Ok(Some((parsed, len)))
}

/// Name/value C-string pairs ending with an empty name.
fn parse_params(mut body: &[u8]) -> Result<Vec<(String, String)>, ProtocolError> {
    let mut params = Vec::new();
    loop {
        let (name, rest) = cstr(body)?;
        if name.is_empty() {
            return if rest.is_empty() {
                Ok(params)
            } else {
                Err(ProtocolError::Malformed("StartupMessage trailing bytes"))
            };
        }
        let (value, rest) = cstr(rest)?;
        params.push((name.to_owned(), value.to_owned()));
        body = rest;
    }
}

fn cstr(buf: &[u8]) -> Result<(&str, &[u8]), ProtocolError> {
    let nul = buf
        .iter()
        .position(|&b| b == 0)
        .ok_or(ProtocolError::Malformed("StartupMessage string"))?;
    let s = std::str::from_utf8(&buf[..nul])
        .map_err(|_| ProtocolError::Malformed("StartupMessage UTF-8"))?;
    Ok((s, &buf[nul + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: u32, body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(&code.to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn startup_with_params() {
        let p = packet(196_608, b"user\0app\0database\0db\0\0");
        let (parsed, used) = parse(&p).unwrap().unwrap();
        assert_eq!(used, p.len());
        let StartupPacket::Startup(s) = parsed else {
            panic!("not a startup")
        };
        assert_eq!(
            (s.user(), s.database(), s.minor),
            (Some("app"), Some("db"), 0)
        );
        assert_eq!(parse(&p[..p.len() - 1]), Ok(None));
    }

    #[test]
    fn database_defaults_to_user() {
        let p = packet(196_608, b"user\0app\0\0");
        let Some((StartupPacket::Startup(s), _)) = parse(&p).unwrap() else {
            panic!()
        };
        assert_eq!(s.database(), Some("app"));
    }

    #[test]
    fn special_requests() {
        assert_eq!(
            parse(&packet(SSL_REQUEST, b"")).unwrap().unwrap().0,
            StartupPacket::Ssl
        );
        assert_eq!(
            parse(&packet(GSSENC_REQUEST, b"")).unwrap().unwrap().0,
            StartupPacket::GssEnc
        );
        let c = packet(CANCEL_REQUEST, &[0, 0, 0, 7, 0, 0, 0, 9]);
        assert_eq!(
            parse(&c).unwrap().unwrap().0,
            StartupPacket::Cancel { pid: 7, secret: 9 }
        );
    }

    #[test]
    fn hostile_packets_are_errors() {
        assert!(parse(&[0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(parse(&[0, 0, 0, 2]).is_err());
        assert!(parse(&packet(196_608, b"user\0app")).is_err());
        assert!(parse(&packet(196_608, b"user\0\xff\0\0")).is_err());
        assert!(parse(&packet(CANCEL_REQUEST, &[0, 0, 0, 7])).is_err());
        assert!(matches!(
            parse(&packet(2 << 16, b"\0")),
            Err(ProtocolError::UnsupportedVersion { major: 2, .. })
        ));
    }
}
