//! Incremental frame scanning for the relay: finds message boundaries in a byte buffer by
//! looking only at the 1-byte tag and 4-byte length, so runs of frames are forwarded with one
//! write and bodies are never copied or parsed.
//!
//! Both scanners are streaming: a frame's body may be forwarded before the whole frame has
//! arrived (a 1 GiB DataRow never has to fit in memory), except where the proxy must see a
//! body (ReadyForQuery's status byte) or must hold a whole request before it checks out an
//! upstream (the client side while detached).

use super::ProtocolError;

/// Reads the tag and the length (which counts itself, not the tag) of the frame at the start of
/// `buf`, or `None` when fewer than 5 bytes are there.
#[inline]
pub fn header(buf: &[u8]) -> Option<(u8, usize)> {
    let head: &[u8; 5] = buf.get(..5)?.try_into().ok()?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    Some((head[0], len))
}

/// Scans frames from PostgreSQL to the client. It reports each ReadyForQuery, because that is
/// where a transaction-mode client gives its upstream back.
#[derive(Debug, Default)]
pub struct BackendScanner {
    /// Bytes at the front of the buffer that are whole frames or passed-through body bytes:
    /// safe to write to the client.
    scanned: usize,
    /// Body bytes of the current frame not yet in the buffer.
    remaining: usize,
    /// A frame was seen that may mean the session's settings changed (see
    /// [`may_change_settings`]); taken with [`BackendScanner::take_settings_changed`].
    settings_changed: bool,
}

/// True for a backend frame that may mean a session setting changed: a ParameterStatus, or a
/// CommandComplete tagged `SET`, `RESET` or `DISCARD ALL`. `body` is `None` when the frame has
/// not fully arrived, which counts as a change (the rare cost is one extra look).
#[inline]
pub fn may_change_settings(tag: u8, body: Option<&[u8]>) -> bool {
    match tag {
        b'S' => true,
        b'C' => body.is_none_or(|b| matches!(b, b"SET\0" | b"RESET\0" | b"DISCARD ALL\0")),
        _ => false,
    }
}

impl BackendScanner {
    /// Advances over `buf[scanned..]`, stopping right after the first ReadyForQuery, whose
    /// transaction status byte (`I`, `T` or `E`) is returned. Call again to continue.
    #[inline]
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<u8>, ProtocolError> {
        loop {
            if self.remaining > 0 {
                let take = self.remaining.min(buf.len() - self.scanned);
                self.scanned += take;
                self.remaining -= take;
                if self.remaining > 0 {
                    return Ok(None);
                }
            }
            let Some((tag, len)) = header(&buf[self.scanned..]) else {
                return Ok(None);
            };
            if len < 4 {
                return Err(ProtocolError::BadLength { tag, len });
            }
            if tag == b'Z' {
                if len != 5 {
                    return Err(ProtocolError::BadLength { tag, len });
                }
                let Some(&status) = buf.get(self.scanned + 5) else {
                    return Ok(None);
                };
                if !matches!(status, b'I' | b'T' | b'E') {
                    return Err(ProtocolError::Malformed("ReadyForQuery status"));
                }
                self.scanned += 6;
                return Ok(Some(status));
            }
            if tag == b'C' || tag == b'S' {
                let body = buf.get(self.scanned + 5..self.scanned + 1 + len);
                self.settings_changed |= may_change_settings(tag, body);
            }
            self.scanned += 5;
            self.remaining = len - 4;
        }
    }

    /// Whether a frame scanned since the last call may have changed settings.
    #[inline]
    pub fn take_settings_changed(&mut self) -> bool {
        std::mem::take(&mut self.settings_changed)
    }

    /// How many bytes at the front of the buffer may be written to the client.
    #[inline]
    pub fn forwardable(&self) -> usize {
        self.scanned
    }

    /// Records that `n` forwardable bytes were written and removed from the buffer front.
    #[inline]
    pub fn consumed(&mut self, n: usize) {
        self.scanned -= n.min(self.scanned);
    }

    /// True when the scan position is between frames (no body is half passed through).
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0
    }

    /// Forgets all state, for a buffer that starts on a frame boundary again.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// What the client side of a scan found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FrontendScan {
    /// Query, Sync and FunctionCall frames passed: each is answered by exactly one
    /// ReadyForQuery, which is how the relay knows when nothing is outstanding.
    pub sync_points: u32,
    /// A request boundary (a sync point or a Flush) was passed: a detached client has a
    /// complete request and may check out an upstream.
    pub request_ready: bool,
    /// The client sent Terminate: it is not forwarded, the scan stops before it.
    pub terminate: bool,
}

/// Scans frames from the client to PostgreSQL.
#[derive(Debug, Default)]
pub struct FrontendScanner {
    scanned: usize,
    remaining: usize,
    /// Frames have been passed since the last sync point: an extended-protocol batch is open,
    /// so the upstream holds half a request and must not be given back yet.
    open_batch: bool,
}

impl FrontendScanner {
    /// Advances over `buf[scanned..]`. With `whole_frames`, only frames that are entirely in
    /// the buffer are passed (a detached client must hold its whole request before checkout);
    /// otherwise bodies stream through. Every length is checked against `max` before the
    /// caller grows a buffer for it.
    pub fn scan(
        &mut self,
        buf: &[u8],
        whole_frames: bool,
        max: usize,
    ) -> Result<FrontendScan, ProtocolError> {
        let mut out = FrontendScan::default();
        loop {
            if self.remaining > 0 {
                let take = self.remaining.min(buf.len() - self.scanned);
                self.scanned += take;
                self.remaining -= take;
                if self.remaining > 0 {
                    return Ok(out);
                }
            }
            let Some((tag, len)) = header(&buf[self.scanned..]) else {
                return Ok(out);
            };
            if len < 4 {
                return Err(ProtocolError::BadLength { tag, len });
            }
            if len > max {
                return Err(ProtocolError::TooLarge { tag, len, max });
            }
            if tag == b'X' {
                out.terminate = true;
                return Ok(out);
            }
            if whole_frames && buf.len() - self.scanned < len + 1 {
                return Ok(out);
            }
            match tag {
                b'Q' | b'S' | b'F' => {
                    out.sync_points += 1;
                    out.request_ready = true;
                    self.open_batch = false;
                }
                b'H' => {
                    out.request_ready = true;
                    self.open_batch = true;
                }
                _ => self.open_batch = true,
            }
            self.scanned += 5;
            self.remaining = len - 4;
        }
    }

    /// Length of the next frame when its header is buffered but its body is not, so the
    /// caller can reserve room for it (already checked against `max` by `scan`).
    pub fn pending_frame_len(&self, buf: &[u8]) -> Option<usize> {
        if self.remaining > 0 {
            return None;
        }
        header(&buf[self.scanned..]).map(|(_, len)| len + 1)
    }

    /// How many bytes at the front of the buffer may be written upstream.
    #[inline]
    pub fn forwardable(&self) -> usize {
        self.scanned
    }

    /// Records that `n` forwardable bytes were written and removed from the buffer front.
    #[inline]
    pub fn consumed(&mut self, n: usize) {
        self.scanned -= n.min(self.scanned);
    }

    /// Drops the scanned bytes from the front of `buf` unsent (a request that could not be
    /// served) and forgets the batch they opened.
    pub fn discard_scanned(&mut self, buf: &mut bytes::BytesMut) {
        bytes::Buf::advance(buf, self.scanned);
        self.scanned = 0;
        self.open_batch = false;
    }

    /// True while the client is inside an extended-protocol batch that has not reached Sync.
    pub fn open_batch(&self) -> bool {
        self.open_batch || self.remaining > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn backend_stops_after_ready_for_query() {
        let mut buf = frame(b'T', b"rowdesc");
        buf.extend(frame(b'D', b"row"));
        buf.extend(frame(b'C', b"SELECT 1\0"));
        buf.extend(frame(b'Z', b"I"));
        let end = buf.len();
        buf.extend(frame(b'N', b"x"));
        let mut s = BackendScanner::default();
        assert_eq!(s.scan(&buf), Ok(Some(b'I')));
        assert_eq!(s.forwardable(), end);
        assert_eq!(s.scan(&buf), Ok(None));
        assert_eq!(s.forwardable(), buf.len());
    }

    #[test]
    fn backend_streams_large_bodies_byte_by_byte() {
        let mut buf = frame(b'D', &[7u8; 1000]);
        buf.extend(frame(b'Z', b"T"));
        let mut s = BackendScanner::default();
        let mut seen = None;
        for end in 1..=buf.len() {
            if let Some(st) = s.scan(&buf[..end]).unwrap() {
                seen = Some((st, end));
            }
        }
        assert_eq!(seen, Some((b'T', buf.len())));
    }

    #[test]
    fn backend_rejects_bad_lengths_and_status() {
        let mut s = BackendScanner::default();
        assert!(s.scan(&[b'D', 0, 0, 0, 3]).is_err());
        let mut s = BackendScanner::default();
        assert!(s.scan(&frame(b'Z', b"IX")).is_err());
        let mut s = BackendScanner::default();
        assert!(s.scan(&frame(b'Z', b"Q")).is_err());
    }

    #[test]
    fn frontend_counts_sync_points_and_batches() {
        let mut buf = frame(b'P', b"\0select 1\0\0\0");
        buf.extend(frame(b'B', b"\0\0\0\0\0\0\0\0"));
        let mut s = FrontendScanner::default();
        let r = s.scan(&buf, true, 1 << 20).unwrap();
        assert!(!r.request_ready);
        assert!(s.open_batch());
        buf.extend(frame(b'S', b""));
        let r = s.scan(&buf, true, 1 << 20).unwrap();
        assert_eq!(r.sync_points, 1);
        assert!(r.request_ready && !s.open_batch());
        assert_eq!(s.forwardable(), buf.len());
    }

    #[test]
    fn frontend_whole_frames_waits_for_body() {
        let q = frame(b'Q', b"select 1\0");
        let mut s = FrontendScanner::default();
        let r = s.scan(&q[..8], true, 1 << 20).unwrap();
        assert_eq!((r.sync_points, s.forwardable()), (0, 0));
        assert_eq!(s.pending_frame_len(&q[..8]), Some(q.len()));
        let r = s.scan(&q, true, 1 << 20).unwrap();
        assert_eq!((r.sync_points, s.forwardable()), (1, q.len()));
    }

    #[test]
    fn frontend_stops_before_terminate_and_checks_size() {
        let mut buf = frame(b'Q', b"select 1\0");
        let q = buf.len();
        buf.extend(frame(b'X', b""));
        let mut s = FrontendScanner::default();
        let r = s.scan(&buf, false, 1 << 20).unwrap();
        assert!(r.terminate);
        assert_eq!(s.forwardable(), q);
        let mut s = FrontendScanner::default();
        let big = [b'Q', 0x10, 0, 0, 0];
        assert!(matches!(
            s.scan(&big, true, 1 << 20),
            Err(ProtocolError::TooLarge { .. })
        ));
    }
}
