//! The client side of a WebSocket connection, for the stream benchmarks
//! (`wsidle`, `wsfanout`) and the WebSocket API's (`wsapi`): the opening
//! handshake, frame decoding, masked frames, and a thin epoll wrapper so
//! that one thread can hold thousands of connections.
//!
//! Connections are opened in batches: every connection of a batch sends
//! its upgrade request before any answer is read, so opening 18,000 of
//! them costs a few seconds, not one round trip each. After the handshake
//! a socket is non-blocking and read only when epoll says so.
//!
//! Server frames are never masked (RFC 6455 §5.1); the frames this client
//! sends (pong, close, and the WebSocket API's text requests) are masked
//! with an all-zero key, which is a valid key and leaves the payload as it
//! is.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

/// Connections whose upgrade requests are in flight at once.
const OPEN_BATCH_COUNT_MAX: usize = 256;
/// The server's answer to an upgrade request, bytes.
const HANDSHAKE_BYTES_MAX: usize = 4096;
/// How long the server may take to answer an upgrade request.
const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Headers the handshake answer may carry.
const HANDSHAKE_HEADERS_COUNT_MAX: usize = 32;

/// One open stream connection: its socket and the bytes of a frame that
/// has not been received whole yet (empty, unallocated, when idle).
pub struct Conn {
    pub stream: TcpStream,
    pub pending: Vec<u8>,
}

/// Opens `count` connections to `path` on `target` and completes their
/// handshakes; the first connection the server refuses ends it with an
/// error that says how far it got.
pub fn open_many(target: &str, path: &str, count: usize) -> io::Result<Vec<Conn>> {
    let request = upgrade_request(path);
    let mut conns = Vec::with_capacity(count);
    while conns.len() < count {
        let batch = (count - conns.len()).min(OPEN_BATCH_COUNT_MAX);
        let mut streams = Vec::with_capacity(batch);
        for _ in 0..batch {
            let mut stream = TcpStream::connect(target)
                .map_err(|e| io::Error::new(e.kind(), format!("connection {}: {e}", conns.len() + streams.len())))?;
            stream.set_nodelay(true)?;
            stream.write_all(&request)?;
            streams.push(stream);
        }
        for mut stream in streams {
            let (status, rest) = read_handshake(&mut stream)?;
            if status != 101 {
                return Err(io::Error::other(format!(
                    "connection {}: upgrade answered {status}",
                    conns.len()
                )));
            }
            stream.set_nonblocking(true)?;
            conns.push(Conn { stream, pending: rest });
        }
    }
    Ok(conns)
}

/// The status the server answers an upgrade to `path` with (101: served).
pub fn probe(target: &str, path: &str) -> io::Result<u16> {
    let mut stream = TcpStream::connect(target)?;
    stream.write_all(&upgrade_request(path))?;
    Ok(read_handshake(&mut stream)?.0)
}

fn upgrade_request(path: &str) -> Vec<u8> {
    // Any base64 of 16 bytes is a valid key; the server's Sec-WebSocket-
    // Accept is not checked, the benchmark trusts the server it measures.
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Reads the answer head; returns its status and any bytes after it.
fn read_handshake(stream: &mut TcpStream) -> io::Result<(u16, Vec<u8>)> {
    stream.set_read_timeout(Some(Duration::from_millis(HANDSHAKE_TIMEOUT_MS)))?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; HANDSHAKE_HEADERS_COUNT_MAX];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(n) = resp
            .parse(&buf)
            .map_err(|e| io::Error::other(format!("bad handshake answer: {e}")))?
        {
            let status = resp.code.unwrap_or(0);
            stream.set_read_timeout(None)?;
            return Ok((status, buf[n..].to_vec()));
        }
        if buf.len() > HANDSHAKE_BYTES_MAX {
            return Err(io::Error::other("handshake answer too large"));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed during the handshake",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Why a connection stopped being readable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gone {
    /// A close frame with this code (if any) and reason.
    Closed(Option<u16>, String),
    /// End of stream or a socket error without a close frame.
    Eof(String),
}

impl Conn {
    /// Reads what the socket holds (one read into `scratch`), answers pings,
    /// and hands each whole text frame to `on_text`. Returns the number of
    /// text frames, or why the connection is gone.
    pub fn read_frames(&mut self, scratch: &mut [u8], mut on_text: impl FnMut(&[u8])) -> Result<usize, Gone> {
        let n = match self.stream.read(scratch) {
            Ok(0) => return Err(Gone::Eof("end of stream".to_string())),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(Gone::Eof(e.to_string())),
        };
        if self.pending.is_empty() {
            let (texts, used) = self.frames(&scratch[..n], &mut on_text)?;
            if used < n {
                self.pending.extend_from_slice(&scratch[used..n]);
            }
            Ok(texts)
        } else {
            let mut buf = std::mem::take(&mut self.pending);
            buf.extend_from_slice(&scratch[..n]);
            let (texts, used) = self.frames(&buf, &mut on_text)?;
            buf.drain(..used);
            // An empty buffer is dropped so that an idle connection holds none.
            self.pending = if buf.is_empty() { Vec::new() } else { buf };
            Ok(texts)
        }
    }

    fn frames(&mut self, buf: &[u8], on_text: &mut impl FnMut(&[u8])) -> Result<(usize, usize), Gone> {
        let (mut at, mut texts) = (0, 0);
        while let Some((frame, len)) = next_frame(&buf[at..]) {
            match frame {
                Frame::Text(text) => {
                    on_text(text);
                    texts += 1;
                }
                Frame::Ping(payload) => {
                    // A pong is 6 bytes plus a short payload; a socket that
                    // cannot take it now is a slow reader anyway.
                    let _ = self.stream.write(&pong_frame(payload));
                }
                Frame::Close(code, reason) => {
                    return Err(Gone::Closed(code, String::from_utf8_lossy(reason).into_owned()))
                }
                Frame::Other => {}
            }
            at += len;
        }
        Ok((texts, at))
    }
}

/// One decoded server frame. Fragmented messages are not expected: the
/// server sends every event as one FIN text frame.
pub enum Frame<'a> {
    Text(&'a [u8]),
    Ping(&'a [u8]),
    Close(Option<u16>, &'a [u8]),
    Other,
}

/// Decodes the frame at the front of `buf`: the frame and its length, or
/// `None` when `buf` does not hold a whole frame yet.
pub fn next_frame(buf: &[u8]) -> Option<(Frame<'_>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let (len, head) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if buf.len() < head + len {
        return None;
    }
    let payload = &buf[head..head + len];
    let frame = match opcode {
        0x1 => Frame::Text(payload),
        0x8 if payload.len() >= 2 => Frame::Close(Some(u16::from_be_bytes([payload[0], payload[1]])), &payload[2..]),
        0x8 => Frame::Close(None, b""),
        0x9 => Frame::Ping(payload),
        _ => Frame::Other,
    };
    Some((frame, head + len))
}

/// Appends a masked text frame carrying `payload` to `out` (a request of
/// the WebSocket API; a client must mask every frame it sends).
pub fn push_text_frame(out: &mut Vec<u8>, payload: &[u8]) {
    let len = payload.len();
    out.push(0x81);
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
}

/// Writes all of `buf` to a non-blocking socket, waiting for room when the
/// kernel's buffer is full (at most `HANDSHAKE_TIMEOUT_MS` per wait).
pub fn write_all(stream: &mut TcpStream, buf: &[u8]) -> io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        match stream.write(&buf[at..]) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "socket closed")),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut fd = libc::pollfd {
                    fd: stream.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd for the duration of the call.
                let rc = unsafe { libc::poll(&mut fd, 1, HANDSHAKE_TIMEOUT_MS as i32) };
                if rc == 0 {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "socket not writable"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A masked pong carrying `payload` (at most 125 bytes, as pings are).
pub fn pong_frame(payload: &[u8]) -> Vec<u8> {
    let len = payload.len().min(125);
    let mut frame = Vec::with_capacity(6 + len);
    frame.extend_from_slice(&[0x8a, 0x80 | len as u8, 0, 0, 0, 0]);
    frame.extend_from_slice(&payload[..len]);
    frame
}

/// Edge of the kernel's epoll: a set of fds, each with a token.
pub struct Epoll {
    fd: RawFd,
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: a plain syscall without pointers.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll { fd })
    }

    /// Watches `stream` for input (level-triggered), reported as `token`.
    pub fn add(&self, stream: &TcpStream, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: both fds are open and `event` outlives the call.
        let rc = unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_ADD, stream.as_raw_fd(), &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Stops watching `stream` (before it is closed).
    pub fn remove(&self, stream: &TcpStream) {
        // SAFETY: both fds are open; a null event is allowed for DEL.
        unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_DEL, stream.as_raw_fd(), std::ptr::null_mut()) };
    }

    /// Waits up to `timeout_ms` and returns the tokens of ready fds.
    pub fn wait(&self, events: &mut [libc::epoll_event], tokens: &mut Vec<u64>, timeout_ms: i32) -> io::Result<()> {
        tokens.clear();
        // SAFETY: `events` is valid for `events.len()` entries.
        let n = unsafe { libc::epoll_wait(self.fd, events.as_mut_ptr(), events.len() as i32, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        tokens.extend(events[..n as usize].iter().map(|e| e.u64));
        Ok(())
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: the fd is ours and closed once.
        unsafe { libc::close(self.fd) };
    }
}

/// An empty event list for [`Epoll::wait`].
pub fn events(count: usize) -> Vec<libc::epoll_event> {
    vec![libc::epoll_event { events: 0, u64: 0 }; count]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_of_every_length_form_decode() {
        let short = [0x81, 3, b'a', b'b', b'c'];
        match next_frame(&short) {
            Some((Frame::Text(t), 5)) => assert_eq!(t, b"abc"),
            _ => panic!("short text frame"),
        }
        let mut mid = vec![0x81, 126, 0, 200];
        mid.extend(std::iter::repeat_n(b'x', 200));
        match next_frame(&mid) {
            Some((Frame::Text(t), 204)) => assert_eq!(t.len(), 200),
            _ => panic!("16-bit length frame"),
        }
        assert!(next_frame(&mid[..100]).is_none());
        assert!(next_frame(&[0x81]).is_none());
        match next_frame(&[0x88, 4, 0x03, 0xf0, b'n', b'o']) {
            Some((Frame::Close(Some(1008), reason), 6)) => assert_eq!(reason, b"no"),
            _ => panic!("close frame"),
        }
        match next_frame(&[0x89, 0]) {
            Some((Frame::Ping(p), 2)) => assert!(p.is_empty()),
            _ => panic!("ping frame"),
        }
    }

    #[test]
    fn text_frames_are_masked_in_every_length_form() {
        let table: &[(usize, &[u8])] = &[
            (3, &[0x81, 0x83, 0, 0, 0, 0]),
            (125, &[0x81, 0x80 | 125, 0, 0, 0, 0]),
            (126, &[0x81, 0x80 | 126, 0, 126, 0, 0, 0, 0]),
            (70_000, &[0x81, 0x80 | 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70, 0, 0, 0, 0]),
        ];
        for &(len, head) in table {
            let payload = vec![b'x'; len];
            let mut frame = Vec::new();
            push_text_frame(&mut frame, &payload);
            assert_eq!(&frame[..head.len()], head, "{len}");
            assert_eq!(frame.len(), head.len() + len, "{len}");
        }
    }

    #[test]
    fn pong_is_masked_with_a_zero_key() {
        assert_eq!(pong_frame(b"hi"), vec![0x8a, 0x82, 0, 0, 0, 0, b'h', b'i']);
    }
}
