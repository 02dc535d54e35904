//! One client connection: read, frame, answer in order, write.
//!
//! Requests are answered strictly in order; responses to pipelined requests
//! are gathered and written together. A connection with nothing to do holds
//! no buffers: both go back to the shard's pool and the connection waits on
//! a one-byte read, raced against the shard's drain signal. That is what
//! keeps an idle keep-alive connection to a few hundred bytes.
//!
//! A buffered response body is gzipped when the request asked for it and
//! `compress` agrees (size, the shard's budget); a streamed export is sent
//! as it is.
//!
//! Time limits: `idle_timeout_ms` while waiting for the first byte of a
//! request; `header_timeout_ms` from that byte until the whole request (head
//! and body) is in, else 408 and close; `write_timeout_ms` for each write.

use crate::api::admin::{self, Answer};
use crate::api::export::Export;
use crate::api::host::Host;
use crate::api::{self, Headers, Reply};
use crate::binance;
use crate::compress::Outcome;
use crate::http::{self, AcceptEncoding, HttpError, Method, Parsed};
use crate::metrics::Route;
use crate::server::shard::Shard;
use crate::server::wsconn::{self, Target, TargetError};
use crate::ws::handshake::{self, Accept};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// Which API a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Listener {
    /// The Binance-compatible API, /health, /ready and /metrics.
    Api,
    /// The admin API.
    Admin,
}

/// Size of a read buffer taken from the pool for a new request.
pub(crate) const BUFFER_BYTES_INITIAL: usize = 4096;
/// Buffers larger than this are freed instead of pooled.
pub(crate) const BUFFER_BYTES_POOLED_MAX: usize = 64 * 1024;
/// Pending response bytes that force a write before more requests are read.
const WRITE_BATCH_BYTES_MAX: usize = 64 * 1024;
/// What one read of a streamed file takes (one chunk of the body).
const FILE_CHUNK_BYTES: usize = 256 * 1024;

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Serves `stream` until the client closes, a limit closes it, or the shard
/// drains. Errors only end this connection.
pub(crate) async fn serve(shard: &Shard, stream: TcpStream, kind: Listener) {
    let _ = stream.set_nodelay(true);
    let peer = stream
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let limits = shard.http_limits();
    let _ = stream.set_write_timeout(Some(Duration::from_millis(limits.write_timeout_ms)));
    set_send_buffer(&stream, limits.socket_send_bytes);
    limit_unsent_time(&stream, limits.write_timeout_ms);
    let mut conn = Conn {
        shard,
        stream,
        read: ReadBuf::empty(),
        write: Vec::new(),
        request_started: None,
        continue_sent: false,
        kind,
        peer,
        requests: 0,
    };
    match conn.run().await {
        Ok(Some(upgrade)) => {
            let early = conn.read.pending().to_vec();
            conn.read.start = conn.read.end;
            conn.release_buffers();
            let (accept, target) = *upgrade;
            wsconn::serve(shard, conn.stream, peer, accept, target, early).await;
        }
        _ => conn.release_buffers(),
    }
}

/// Caps the kernel's send buffer of a connection when configured (0: the
/// kernel's autotuning), so that what a client that stopped reading holds
/// is bounded in the kernel too.
///
/// A write times out only when it makes no progress for the write
/// timeout. Autotuned, the send buffer of a connection whose client
/// stopped reading kept growing (to megabytes) while the client sent more
/// requests, every response a successful write, and such a client was
/// closed only about twice the timeout after it stopped reading, or
/// later. Capped, the buffer fills within a few responses and the timeout
/// runs from about when the client stopped.
pub(crate) fn set_send_buffer(stream: &TcpStream, bytes: usize) {
    if bytes > 0 {
        let value = bytes.min(i32::MAX as usize) as libc::c_int;
        set_socket_option(stream, libc::SOL_SOCKET, libc::SO_SNDBUF, value);
    }
}

/// Makes the kernel close the connection once what it was sent has waited
/// `ms` unacknowledged, or untransmitted behind a zero window
/// (`TCP_USER_TIMEOUT`): a client that stops reading after its last
/// request, while the server no longer writes, is closed as well.
pub(crate) fn limit_unsent_time(stream: &TcpStream, ms: u64) {
    let ms = libc::c_uint::try_from(ms).unwrap_or(libc::c_uint::MAX);
    set_socket_option(stream, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, ms);
}

/// Sets one option of `stream`'s socket. A failure is ignored: each option
/// refines a connection that works without it.
fn set_socket_option<T: Copy>(stream: &TcpStream, level: libc::c_int, name: libc::c_int, value: T) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket fd, and a pointer to a value of the size given.
    let _ = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            level,
            name,
            (&value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
}

/// A request the connection switches to WebSocket for.
type Upgrade = Box<(Accept, Target)>;

/// What an `Upgrade: websocket` request came to.
enum UpgradeStep {
    /// Not an upgrade: route it as HTTP.
    Http,
    /// Refused; the error response is encoded.
    Answered,
    Upgrade(Upgrade),
}

/// The read buffer: initialised bytes, `start..end` not yet consumed.
struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    fn empty() -> ReadBuf {
        ReadBuf {
            data: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Makes room for at least `len` bytes of the current request.
    fn reserve_request(&mut self, len: usize) {
        if self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.data.len() < len {
            self.data.resize(len, 0);
        }
    }
}

struct Conn<'a> {
    shard: &'a Shard,
    stream: TcpStream,
    read: ReadBuf,
    write: Vec<u8>,
    /// When the first byte of the request being read arrived.
    request_started: Option<Instant>,
    continue_sent: bool,
    kind: Listener,
    peer: IpAddr,
    /// Requests answered on this connection.
    requests: u64,
}

/// How long a connection with nothing to read keeps its buffers.
const BUFFER_HOLD_MS: u64 = 200;
/// Requests a connection must have sent before it holds buffers while quiet.
const HOLD_AFTER_REQUESTS: u64 = 2;

/// What waiting for the next request with buffers held came to.
enum Idle {
    /// Bytes arrived.
    Data,
    /// The client closed.
    Close,
    /// Nothing arrived within `BUFFER_HOLD_MS`.
    Quiet,
}

fn encode_into<H: AsRef<str>>(
    out: &mut Vec<u8>,
    reply: &Reply,
    headers: &[H],
    body: &[u8],
    outcome: Outcome,
    close: bool,
    head_only: bool,
) {
    http::encode(
        out,
        &http::Response {
            status: reply.status,
            content_type: reply.content_type,
            headers,
            body,
            content_encoding: matches!(outcome, Outcome::Gzip { .. }).then_some("gzip"),
            vary_accept_encoding: outcome.varies(),
            close,
            head_only,
        },
    );
}

/// What to do after answering the buffered requests.
enum Next {
    /// The answers gathered fill a write: send them, then go on answering
    /// what is buffered before reading anything more.
    Write,
    /// Every complete request is answered: read more. The next request
    /// takes at least `bytes_needed` bytes (room the buffer makes).
    Read {
        bytes_needed: usize,
    },
    Close,
    Upgrade(Upgrade),
}

impl Conn<'_> {
    /// Serves HTTP until the connection closes (`None`) or a request
    /// upgrades it to WebSocket.
    async fn run(&mut self) -> io::Result<Option<Upgrade>> {
        loop {
            let next = self.answer_buffered().await;
            if !self.write.is_empty() {
                self.flush().await?;
            }
            let bytes_needed = match next {
                Next::Close => return Ok(None),
                Next::Upgrade(upgrade) => return Ok(Some(upgrade)),
                // Complete requests may still be buffered: a pipelining
                // client may have sent all it will and now waits for their
                // answers, so reading first would stall the connection until
                // the header timeout. `answer_buffered` reads on only once
                // the buffer holds no complete request.
                Next::Write => continue,
                Next::Read { bytes_needed } => bytes_needed,
            };
            if self.read.is_empty() {
                match self.read_next().await? {
                    Idle::Data => continue,
                    Idle::Close => return Ok(None),
                    Idle::Quiet => {}
                }
                self.release_buffers();
                if !self.wait_idle().await? {
                    return Ok(None);
                }
                continue;
            }
            if !self.read_more(bytes_needed).await? {
                return Ok(None);
            }
        }
    }

    /// Checks an upgrade request's handshake headers and path.
    async fn upgrade(&mut self, head: &http::Head) -> UpgradeStep {
        let buf = self.read.pending();
        let accept = match handshake::negotiate(&head.upgrade.request(head.method, buf)) {
            Ok(None) => return UpgradeStep::Http,
            Ok(Some(accept)) => accept,
            Err(e) => {
                self.answer_error_with(Route::Malformed, &e.http_error(), e.headers());
                return UpgradeStep::Answered;
            }
        };
        let target = wsconn::target(self.shard, &buf[head.path.clone()], &buf[head.query.clone()]);
        let ready = self.shard.is_ready();
        // A WebSocket API connection counts against the attempts per IP
        // and costs weight, as on Binance.
        let admitted = match &target {
            Ok(Target { ws_api: Some(_), .. }) if ready => self.shard.ws_api_admit(self.peer).await,
            _ => Ok(()),
        };
        let error = match (target, admitted) {
            _ if !ready => api::starting(),
            (Ok(_), Err(refused)) => refused,
            (Ok(target), Ok(())) if self.shard.ws_open(self.peer) => {
                return UpgradeStep::Upgrade(Box::new((accept, target)))
            }
            (Ok(_), Ok(())) => HttpError::new(
                429,
                binance::TOO_MANY_REQUESTS,
                "Too many WebSocket connections from this IP; close some and retry.",
            ),
            (Err(TargetError::NotStreams), _) => {
                let path = String::from_utf8_lossy(&buf[head.path.clone()]);
                HttpError::new(404, binance::UNSUPPORTED_OPERATION, format!("Unknown path {path}."))
            }
            (Err(e), _) => HttpError::new(400, binance::ILLEGAL_CHARS, e.to_string()),
        };
        self.answer_error_with(Route::NotFound, &error, &[]);
        UpgradeStep::Answered
    }

    fn answer_error_with(&mut self, route: Route, error: &HttpError, headers: &'static [&'static str]) {
        let mut reply = Reply::error(route, error);
        reply.headers = Headers::Static(headers);
        self.encode(&reply, false, false, Instant::now(), AcceptEncoding::IDENTITY);
    }

    /// Answers every complete request in the buffer, in order.
    async fn answer_buffered(&mut self) -> Next {
        let limits = *self.shard.http_limits();
        loop {
            if self.read.is_empty() {
                self.read.start = 0;
                self.read.end = 0;
                return Next::Read { bytes_needed: 1 };
            }
            let parsed = http::parse(self.read.pending(), &limits);
            let head = match parsed {
                Ok(Parsed::Complete(head)) => head,
                Ok(Parsed::Partial { needed_len }) => {
                    self.request_started.get_or_insert_with(Instant::now);
                    let bytes_needed = match needed_len {
                        Some(head) => {
                            if head.expect_continue && !self.continue_sent {
                                self.continue_sent = true;
                                self.write.extend_from_slice(CONTINUE);
                            }
                            head.len
                        }
                        None => (self.read.end - self.read.start + 1)
                            .max(BUFFER_BYTES_INITIAL)
                            .min(limits.header_bytes_max + 1),
                    };
                    return Next::Read { bytes_needed };
                }
                Err(error) => {
                    self.answer_error(Route::Malformed, &error, true);
                    return Next::Close;
                }
            };
            if self.kind == Listener::Api {
                match self.upgrade(&head).await {
                    UpgradeStep::Http => {}
                    UpgradeStep::Answered => {
                        self.read.start += head.len;
                        continue;
                    }
                    UpgradeStep::Upgrade(upgrade) => {
                        self.read.start += head.len;
                        return Next::Upgrade(upgrade);
                    }
                }
            }
            let started = Instant::now();
            // Boxed: the handlers' await states are large, and inline they
            // would make every connection's task that large even when idle.
            let answer = match self.kind {
                Listener::Api => {
                    Answer::Reply(Box::pin(api::handle(self.shard, self.read.pending(), &head, self.peer)).await)
                }
                Listener::Admin => {
                    let token = self.shard.admin_token();
                    Box::pin(admin::handle(self.shard, self.read.pending(), &head, token)).await
                }
            };
            let close = !head.keep_alive || self.shard.is_draining();
            match answer {
                Answer::Reply(reply) => {
                    if let api::Body::File(path) = &reply.body {
                        let streamed = Box::pin(self.stream_file(&reply, path, close)).await;
                        let elapsed = started.elapsed().as_nanos() as u64;
                        self.shard.metrics_mut().record(reply.route, 200, elapsed);
                        if streamed.is_err() {
                            // Cut without its last chunk (see below).
                            self.write.clear();
                            return Next::Close;
                        }
                    } else {
                        let head_only = head.method == Method::Head;
                        self.encode(&reply, close, head_only, started, head.accept_encoding);
                    }
                }
                Answer::Export(export) => {
                    let streamed = Box::pin(self.stream_export(*export, close)).await;
                    let elapsed = started.elapsed().as_nanos() as u64;
                    self.shard.metrics_mut().record(Route::Admin, 200, elapsed);
                    if streamed.is_err() {
                        // Cut without its last chunk, so that the client
                        // knows the body is incomplete: the connection
                        // cannot go on.
                        self.write.clear();
                        return Next::Close;
                    }
                }
            }
            self.read.start += head.len;
            self.requests += 1;
            self.request_started = None;
            self.continue_sent = false;
            if close {
                return Next::Close;
            }
            if self.write.len() >= WRITE_BATCH_BYTES_MAX {
                return Next::Write;
            }
        }
    }

    /// Streams an export as a chunked body: the head and the first page
    /// after any earlier pipelined answers, then one chunk per page, each
    /// written (under `write_timeout_ms`) before the next page is read, so
    /// the export holds one page whatever its size and a slow reader slows
    /// only its own export. The last chunk stays in the write buffer for
    /// the next flush. An error (the store failed, the client went away or
    /// stopped reading, the shard drains) ends the export without its last
    /// chunk; the connection must then close.
    async fn stream_export(&mut self, mut export: Export<'_>, close: bool) -> io::Result<()> {
        self.ensure_write_buffer();
        http::encode_chunked_head(&mut self.write, 200, export.content_type(), &export.headers(), close);
        loop {
            match export.next_chunk().await {
                Ok(Some(chunk)) => http::encode_chunk(&mut self.write, chunk),
                Ok(None) => break,
                Err(e) => {
                    eprintln!("shard {}: export cut: {e}", self.shard.index);
                    self.flush().await?;
                    return Err(io::Error::other(e));
                }
            }
            self.flush().await?;
            if self.shard.is_draining() {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "draining"));
            }
        }
        self.write.extend_from_slice(http::LAST_CHUNK);
        // The head may still be here, unsent, when there were no rows.
        self.shrink_write_buffer();
        Ok(())
    }

    /// Streams a file as the body, [`FILE_CHUNK_BYTES`] at a time, each
    /// written before the next is read, as [`Self::stream_export`] streams
    /// pages. Its length is known: a file that cannot be read to its end
    /// ends the response short, and the connection closes.
    async fn stream_file(&mut self, reply: &api::Reply, path: &std::path::Path, close: bool) -> io::Result<()> {
        let file = glommio::io::BufferedFile::open(path)
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.ensure_write_buffer();
        let headers: Vec<String> = match &reply.headers {
            api::Headers::Owned(headers) => headers.clone(),
            api::Headers::Static(headers) => headers.iter().map(|h| h.to_string()).collect(),
        };
        let length = match file.file_size().await {
            Ok(length) => length,
            Err(e) => {
                let _ = file.close().await;
                return Err(io::Error::other(e.to_string()));
            }
        };
        http::encode_sized_head(&mut self.write, 200, reply.content_type, &headers, length, close);
        let mut at = 0;
        let result = loop {
            if at == length {
                break Ok(());
            }
            let chunk = match file.read_at(at, FILE_CHUNK_BYTES).await {
                Ok(chunk) if !chunk.is_empty() => chunk,
                Ok(_) => break Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file got shorter")),
                Err(e) => break Err(io::Error::other(e.to_string())),
            };
            at += chunk.len() as u64;
            self.write.extend_from_slice(&chunk);
            if let Err(e) = self.flush().await {
                break Err(e);
            }
            if self.shard.is_draining() {
                break Err(io::Error::new(io::ErrorKind::Interrupted, "draining"));
            }
        };
        let _ = file.close().await;
        result?;
        self.shrink_write_buffer();
        Ok(())
    }

    /// Gives back what a streamed body's chunks took beyond a pooled
    /// buffer, keeping what is still unsent.
    fn shrink_write_buffer(&mut self) {
        if self.write.capacity() > BUFFER_BYTES_POOLED_MAX {
            let mut small = self.shard.take_buffer(BUFFER_BYTES_INITIAL);
            small.extend_from_slice(&self.write);
            let chunks = std::mem::replace(&mut self.write, small);
            self.shard.give_buffer(chunks);
        }
    }

    /// Appends the response to the write buffer. A HEAD request's body is
    /// compressed too, so that its Content-Length is the GET's.
    fn encode(&mut self, reply: &Reply, close: bool, head_only: bool, started: Instant, accept: AcceptEncoding) {
        self.ensure_write_buffer();
        let shard = self.shard;
        let mut compressor = shard.compressor.borrow_mut();
        // The request's start time is the budget's clock: no second read.
        let (outcome, body) = compressor.encode(reply.body.as_bytes(), accept, started);
        let out = &mut self.write;
        match &reply.headers {
            Headers::Static(headers) => encode_into(out, reply, headers, body, outcome, close, head_only),
            Headers::Owned(headers) => encode_into(out, reply, headers, body, outcome, close, head_only),
        }
        drop(compressor);
        let elapsed = started.elapsed().as_nanos() as u64;
        let mut metrics = shard.metrics_mut();
        metrics.compression.count(outcome);
        metrics.record(reply.route, reply.status, elapsed);
    }

    fn answer_error(&mut self, route: Route, error: &HttpError, close: bool) {
        let reply = Reply::error(route, error);
        self.encode(
            &reply,
            close || error.close,
            false,
            Instant::now(),
            AcceptEncoding::IDENTITY,
        );
    }

    fn ensure_write_buffer(&mut self) {
        if self.write.capacity() == 0 {
            self.write = self.shard.take_buffer(BUFFER_BYTES_INITIAL);
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        let result = self.stream.write_all(&self.write).await;
        match &result {
            Ok(()) => self.shard.metrics_mut().bytes_sent += self.write.len() as u64,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => self.shard.metrics_mut().write_timeouts += 1,
            Err(_) => {}
        }
        self.write.clear();
        result
    }

    /// Waits up to `BUFFER_HOLD_MS` for the next request with the buffers
    /// still held: a busy connection reads each request with one call, as
    /// it would with a buffer of its own. After that the connection counts
    /// as quiet and gives its buffers back.
    async fn read_next(&mut self) -> io::Result<Idle> {
        let idle_timeout = Duration::from_millis(self.shard.http_limits().idle_timeout_ms);
        let hold = Duration::from_millis(BUFFER_HOLD_MS);
        // Only a connection that has shown it is busy (more than one request)
        // holds buffers: a burst of new connections that each ask once and
        // then idle must not all hold buffers at the same time.
        if self.read.data.is_empty() || self.shard.is_draining() || self.requests < HOLD_AFTER_REQUESTS {
            let _ = self.stream.set_read_timeout(Some(idle_timeout));
            return Ok(Idle::Quiet);
        }
        // Set before the first pending read: glommio arms its timer with the
        // timeout in force then and keeps that deadline until a read succeeds.
        let _ = self.stream.set_read_timeout(Some(hold.min(idle_timeout)));
        let end = self.read.end;
        match self.stream.read(&mut self.read.data[end..]).await {
            Ok(0) => Ok(Idle::Close),
            Ok(n) => {
                self.received(n);
                Ok(Idle::Data)
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut && idle_timeout > hold => {
                let _ = self.stream.set_read_timeout(Some(idle_timeout - hold));
                Ok(Idle::Quiet)
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(Idle::Close),
            Err(e) => Err(e),
        }
    }

    /// Waits, holding no buffer, for the first byte of the next request,
    /// under the read timeout `read_next` left (the rest of the idle time).
    /// `Ok(false)`: close (client closed, idle too long, or draining).
    async fn wait_idle(&mut self) -> io::Result<bool> {
        if self.shard.is_draining() {
            return Ok(false);
        }
        let mut byte = [0u8; 1];
        let stream = &mut self.stream;
        let read = async { Some(stream.read(&mut byte).await) };
        let drained = async {
            self.shard.drained().await;
            None
        };
        match futures_lite::future::or(read, drained).await {
            None | Some(Ok(0)) => Ok(false),
            Some(Err(e)) if e.kind() == io::ErrorKind::TimedOut => Ok(false),
            Some(Err(e)) => Err(e),
            Some(Ok(_)) => {
                self.read.data = self.shard.take_buffer(BUFFER_BYTES_INITIAL);
                let capacity = self.read.data.capacity();
                self.read.data.resize(capacity, 0);
                self.read.data[0] = byte[0];
                self.read.start = 0;
                self.read.end = 0;
                self.received(1);
                self.request_started = Some(Instant::now());
                Ok(true)
            }
        }
    }

    /// Reads more of a request that has started, within its deadline.
    async fn read_more(&mut self, bytes_needed: usize) -> io::Result<bool> {
        if self.read.data.is_empty() {
            self.read.data = self.shard.take_buffer(BUFFER_BYTES_INITIAL);
            let capacity = self.read.data.capacity();
            self.read.data.resize(capacity, 0);
        }
        self.read
            .reserve_request(bytes_needed.max(self.read.end - self.read.start + 1));
        let limits = *self.shard.http_limits();
        let started = *self.request_started.get_or_insert_with(Instant::now);
        let left = Duration::from_millis(limits.header_timeout_ms).saturating_sub(started.elapsed());
        if left.is_zero() {
            return self.timed_out().await;
        }
        let _ = self.stream.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        let end = self.read.end;
        match self.stream.read(&mut self.read.data[end..]).await {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.received(n);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => self.timed_out().await,
            Err(e) => Err(e),
        }
    }

    async fn timed_out(&mut self) -> io::Result<bool> {
        self.shard.metrics_mut().header_timeouts += 1;
        let error = HttpError::new(
            408,
            binance::TIMEOUT,
            "Timeout waiting for the request; closing the connection.",
        );
        self.answer_error(Route::Malformed, &error, true);
        self.flush().await?;
        Ok(false)
    }

    fn received(&mut self, n: usize) {
        self.read.end += n;
        self.shard.metrics_mut().bytes_received += n as u64;
    }

    fn release_buffers(&mut self) {
        if self.read.data.capacity() > 0 && self.read.is_empty() {
            self.shard.give_buffer(std::mem::take(&mut self.read.data));
            self.read = ReadBuf::empty();
        }
        if self.write.capacity() > 0 && self.write.is_empty() {
            self.shard.give_buffer(std::mem::take(&mut self.write));
        }
    }
}
