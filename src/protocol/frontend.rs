//! The client messages the proxy itself reads during login: PasswordMessage and the SASL
//! messages that share its `p` tag. Everything after login is forwarded without parsing.

use bytes::{Buf, Bytes, BytesMut};

use super::ProtocolError;
use super::frame::header;

/// Takes one whole frame off the front of `buf`: `Ok(None)` until it has fully arrived. The
/// length is checked against `max` before any room is reserved for it.
pub fn split_frame(buf: &mut BytesMut, max: usize) -> Result<Option<(u8, Bytes)>, ProtocolError> {
    let Some((tag, len)) = header(buf) else {
        return Ok(None);
    };
    if len < 4 {
        return Err(ProtocolError::BadLength { tag, len });
    }
    if len > max {
        return Err(ProtocolError::TooLarge { tag, len, max });
    }
    if buf.len() < len + 1 {
        buf.reserve(len + 1 - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(len + 1);
    frame.advance(5);
    Ok(Some((tag, frame.freeze())))
}

/// The password of a PasswordMessage (cleartext or md5 response), without its terminator.
pub fn password(body: &[u8]) -> Result<&[u8], ProtocolError> {
    match body.split_last() {
        Some((0, pw)) if !pw.contains(&0) => Ok(pw),
        _ => Err(ProtocolError::Malformed("PasswordMessage")),
    }
}

/// SASLInitialResponse: the chosen mechanism and the client-first-message.
pub fn sasl_initial(body: &[u8]) -> Result<(&str, &[u8]), ProtocolError> {
    const WHAT: ProtocolError = ProtocolError::Malformed("SASLInitialResponse");
    let nul = body.iter().position(|&b| b == 0).ok_or(WHAT)?;
    let mechanism = std::str::from_utf8(&body[..nul]).map_err(|_| WHAT)?;
    let rest = &body[nul + 1..];
    let len: [u8; 4] = rest.get(..4).ok_or(WHAT)?.try_into().map_err(|_| WHAT)?;
    let data = &rest[4..];
    match i32::from_be_bytes(len) {
        -1 if data.is_empty() => Ok((mechanism, data)),
        n if n >= 0 && n as usize == data.len() => Ok((mechanism, data)),
        _ => Err(WHAT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_whole_frames_only() {
        let mut buf = BytesMut::from(&b"p\0\0\0\x09abcd\0Q"[..]);
        let (tag, body) = split_frame(&mut buf, 100).unwrap().unwrap();
        assert_eq!((tag, &body[..]), (b'p', &b"abcd\0"[..]));
        assert_eq!(&buf[..], b"Q");
        assert_eq!(split_frame(&mut buf, 100), Ok(None));
        let mut big = BytesMut::from(&b"p\x7f\0\0\0"[..]);
        assert!(split_frame(&mut big, 100).is_err());
    }

    #[test]
    fn password_and_sasl_bodies() {
        assert_eq!(password(b"secret\0"), Ok(&b"secret"[..]));
        assert!(password(b"secret").is_err());
        assert!(password(b"se\0cret\0").is_err());
        let mut body = b"SCRAM-SHA-256\0".to_vec();
        body.extend_from_slice(&3i32.to_be_bytes());
        body.extend_from_slice(b"n,,");
        assert_eq!(sasl_initial(&body), Ok(("SCRAM-SHA-256", &b"n,,"[..])));
        body.push(b'x');
        assert!(sasl_initial(&body).is_err());
        assert!(sasl_initial(b"SCRAM").is_err());
        assert!(sasl_initial(b"SCRAM\0\0\0").is_err());
    }
}
