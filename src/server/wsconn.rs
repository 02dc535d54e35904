//! One WebSocket connection after its opening handshake: the stream API's
//! requests (SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY,
//! GET_PROPERTY), pings both ways, the close handshake, and writing the
//! frames the shard's fan-out queues for it.
//!
//! `conn` hands a connection over once [`target`] accepted its path and
//! `ws::handshake` its headers. The connection stays on this shard: it
//! subscribes in the shard's registry (`Shard::subscribe`), and a single
//! task alternates between writing its [`Outbound`] queue and waiting for
//! whichever comes first of client bytes, queued frames, the ping timer or
//! the shard's drain.
//!
//! Limits: `ws_message_bytes_max` per client message (1009),
//! `WS_MESSAGES_PER_SECOND_MAX` client frames per second (1008),
//! `WS_STREAMS_PER_CONNECTION_MAX` streams, `ws_outbound_bytes_max` queued
//! bytes (1008, counted as a slow consumer), a ping every `PING_INTERVAL_MS`
//! and a close after `PONG_TIMEOUT_MS` without a pong,
//! `ws_user_data_connections_per_user_max` user data stream connections
//! per user over all shards (HTTP 429, -1003, instead of the `101`). A user
//! data stream whose listen key expires or is closed gets
//! `listenKeyExpired` and then a normal close (1000). An idle connection
//! holds no read buffer; only the stack buffer of its task remains.

use crate::api::host::Host;
use crate::binance;
use crate::http::HttpError;
use crate::server::publish;
use crate::server::shard::Shard;
use crate::server::wsapi::{Session, WsApiOptions};
use crate::streams::{Outbound, StreamKey, UserAttach, WS_STREAMS_PER_CONNECTION_MAX};
use crate::ws::handshake::Accept;
use crate::ws::{self, CloseCode, CloseReason, Message, Reader, WsLimits};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use serde_json::Value;
use std::borrow::Cow;
use std::io;
use std::net::IpAddr;
use std::ops::Range;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How often the server pings.
pub(crate) const PING_INTERVAL_MS: u64 = 20_000;
/// A connection that has not answered a ping for this long is closed.
pub(crate) const PONG_TIMEOUT_MS: u64 = 60_000;
/// Client frames (requests, pings, pongs) per second, as Binance counts.
pub(crate) const WS_MESSAGES_PER_SECOND_MAX: u32 = 5;
/// The WebSocket API's path.
pub(crate) const WS_API_PATH: &str = "/ws-api/v3";
/// What a WebSocket API connection takes from its socket in one go once
/// a read filled the chunk, and in steps of how much.
const WS_API_READ_BYTES_MAX: usize = 64 * 1024;
const WS_API_READ_STEP_BYTES: usize = 16 * 1024;
/// WebSocket API requests answered together (one durable commit, one run
/// of frames, one call to each other shard that holds their users).
const WS_API_BATCH_REQUESTS_MAX: usize = 64;
/// Queued frames gathered into one write at most.
const WRITE_COALESCE_BYTES: usize = 64 * 1024;
/// Bytes read from the socket at once into the task's own buffer.
const READ_CHUNK_BYTES: usize = 512;

/// Binance's stream-API error codes.
const CODE_UNKNOWN_PROPERTY: i64 = 0;
const CODE_INVALID_VALUE: i64 = 1;
const CODE_INVALID_REQUEST: i64 = 2;
const CODE_INVALID_JSON: i64 = 3;

/// What the request path asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) streams: Vec<StreamKey>,
    pub(crate) combined: bool,
    /// `/ws/<listenKey>`: the user data stream of the key's user.
    pub(crate) listen_key: Option<String>,
    /// `/ws-api/v3`: the WebSocket API, not streams.
    pub(crate) ws_api: Option<WsApiOptions>,
}

/// Why a path cannot be upgraded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TargetError {
    #[error("not a stream path")]
    NotStreams,
    #[error("Invalid stream name {0}.")]
    BadStream(String),
    #[error("Too many streams; at most {WS_STREAMS_PER_CONNECTION_MAX}.")]
    TooMany,
}

/// Parses `/ws`, `/ws/<stream>[/<stream>..]` and `/stream?streams=a/b`.
/// As on Binance, `/ws/<anything>` upgrades and subscribes only the names
/// that are real streams: ccxt opens `/ws/<n>` (its connection counter)
/// and then sends SUBSCRIBE. A combined stream's list is the client's
/// request itself, so a bad name there is refused with 400.
pub(crate) fn target(shard: &Shard, path: &[u8], query: &[u8]) -> Result<Target, TargetError> {
    let path = std::str::from_utf8(path).map_err(|_| TargetError::NotStreams)?;
    if path == WS_API_PATH {
        let return_rate_limits = query.split(|&b| b == b'&').all(|p| p != b"returnRateLimits=false");
        return Ok(Target {
            streams: Vec::new(),
            combined: false,
            listen_key: None,
            ws_api: Some(WsApiOptions { return_rate_limits }),
        });
    }
    let (names, combined) = match path {
        "/ws" | "/ws/" => ("", false),
        "/stream" => {
            let query = std::str::from_utf8(query).map_err(|_| TargetError::NotStreams)?;
            let streams = query.split('&').find_map(|p| p.strip_prefix("streams="));
            (streams.unwrap_or(""), true)
        }
        _ => match path.strip_prefix("/ws/") {
            Some(names) => (names, false),
            None => return Err(TargetError::NotStreams),
        },
    };
    if !combined && !names.contains(['@', '/']) && is_listen_key(names) {
        return Ok(Target {
            streams: Vec::new(),
            combined,
            listen_key: Some(names.to_string()),
            ws_api: None,
        });
    }
    let trading = shard.trading();
    let mut streams = Vec::new();
    let mut listen_key = None;
    for name in names.split('/').filter(|n| !n.is_empty()) {
        // A combined stream may carry one listen key among market streams.
        if combined && listen_key.is_none() && is_listen_key(name) {
            listen_key = Some(name.to_string());
            continue;
        }
        let Some(key) = StreamKey::parse(name, &trading) else {
            if combined {
                return Err(TargetError::BadStream(name.to_string()));
            }
            continue;
        };
        if !streams.contains(&key) {
            streams.push(key);
        }
    }
    if streams.len() > WS_STREAMS_PER_CONNECTION_MAX {
        return Err(TargetError::TooMany);
    }
    Ok(Target {
        streams,
        combined,
        listen_key,
        ws_api: None,
    })
}

/// A name that can only be a listen key: it starts with a user id and
/// names no stream.
fn is_listen_key(name: &str) -> bool {
    !name.contains('@') && crate::auth::user_of_key(name.as_bytes()).is_some()
}

/// Subscribes, answers 101 and serves the connection until it closes.
/// `early` holds bytes the client sent after its handshake.
pub(crate) async fn serve(
    shard: &Shard,
    mut stream: TcpStream,
    peer: IpAddr,
    accept: Accept,
    target: Target,
    early: Vec<u8>,
) {
    // The HTTP idle timeout no longer applies: pings decide liveness now.
    let _ = stream.set_read_timeout(None);
    crate::server::conn::set_send_buffer(&stream, shard.ws_config().socket_send_bytes);
    let out = Rc::new(Outbound::new(shard.ws_config().outbound_bytes_max, target.combined));
    let mut conn = WsConn {
        shard,
        out,
        subscriptions: Vec::new(),
        reader: Reader::default(),
        read: early,
        limits: WsLimits {
            message_bytes_max: shard.ws_config().message_bytes_max,
        },
        last_pong: Instant::now(),
        next_ping: Instant::now() + Duration::from_millis(PING_INTERVAL_MS),
        window_start: Instant::now(),
        window_messages: 0,
        session: target.ws_api.map(|options| Box::new(Session::new(peer, options))),
    };
    for key in target.streams {
        if publish::subscribe(conn.shard, key, &conn.out).await.is_ok() {
            conn.subscriptions.push(key);
        }
    }
    let mut response = Vec::with_capacity(160);
    let user = match &target.listen_key {
        Some(key) => match user_stream(shard, key, &conn.out).await {
            Ok(user) => Some(user),
            Err(error) => {
                crate::http::encode_error(&mut response, &error, &[], true);
                None
            }
        },
        None => None,
    };
    let upgraded = target.listen_key.is_none() || user.is_some();
    if upgraded {
        accept.encode_response(&mut response);
    }
    if stream.write_all(&response).await.is_ok() && upgraded {
        let end = conn.run(&mut stream).await;
        let _ = conn.close(&mut stream, end).await;
    }
    for key in std::mem::take(&mut conn.subscriptions) {
        publish::unsubscribe(shard, key, &conn.out);
    }
    if let Some(user) = user {
        publish::unsubscribe_user(shard, user, &conn.out);
    }
    if let Some(session) = &mut conn.session {
        session.close(shard, &conn.out);
        session.release_guard(shard).await;
    }
    shard.ws_closed(peer);
}

/// Attaches a user data stream connection, or the HTTP error that refuses
/// it: 400 -1125 for a key that is unknown, closed or expired, 429 -1003
/// for a user at `ws_user_data_connections_per_user_max`.
async fn user_stream(shard: &Shard, key: &str, out: &Rc<Outbound>) -> Result<tradsys_engine::order::UserId, HttpError> {
    if let Some(user) = crate::auth::user_of_key(key.as_bytes()) {
        if let Some((_, instance)) = shard.trading().user_elsewhere(user) {
            return Err(crate::api::request::elsewhere(&format!("User {user}"), instance));
        }
    }
    match publish::subscribe_user(shard, key, out).await {
        Ok(UserAttach::Attached(user)) => Ok(user),
        Ok(UserAttach::TooMany) => Err(HttpError::new(
            429,
            binance::TOO_MANY_REQUESTS,
            format!(
                "Too many user data stream connections; at most {} per user.",
                shard.ws_config().user_data_connections_per_user_max
            ),
        )),
        Ok(UserAttach::UnknownKey) => Err(HttpError::new(
            400,
            binance::INVALID_LISTEN_KEY,
            "This listenKey does not exist.",
        )),
        Err(_) => Err(HttpError::new(503, binance::DISCONNECTED, binance::MSG_INTERNAL)),
    }
}

/// Why the connection ends, and the close code to send (if any).
#[derive(Debug)]
enum End {
    /// The client closed; echo its code.
    ClientClosed(Option<CloseCode>),
    Close(CloseCode, &'static str),
    /// The socket failed; nothing more can be sent.
    Gone,
}

/// What reading the buffer came to.
enum Step {
    Request(Text),
    Again,
    NeedMore,
}

/// A client's text message: where it lies in the read buffer, or its own
/// text when it came in fragments.
enum Text {
    Span(Range<usize>),
    Owned(String),
}

impl Text {
    fn resolve<'a>(&'a self, buf: &'a [u8]) -> &'a str {
        match self {
            // The reader checked the span is UTF-8; were it not, the
            // request would be answered as malformed JSON.
            Text::Span(span) => buf
                .get(span.clone())
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or(""),
            Text::Owned(text) => text,
        }
    }
}

/// What woke the idle connection.
enum Wake {
    Read(io::Result<usize>),
    Queued,
    Timer,
    Drain,
}

struct WsConn<'a> {
    shard: &'a Shard,
    out: Rc<Outbound>,
    /// In subscription order, for LIST_SUBSCRIPTIONS.
    subscriptions: Vec<StreamKey>,
    reader: Reader,
    /// Client bytes not yet consumed; empty (unallocated) when idle.
    read: Vec<u8>,
    limits: WsLimits,
    last_pong: Instant,
    next_ping: Instant,
    window_start: Instant,
    window_messages: u32,
    /// A WebSocket API connection's session; `None` on a stream connection.
    session: Option<Box<Session>>,
}

impl WsConn<'_> {
    async fn run(&mut self, stream: &mut TcpStream) -> End {
        loop {
            if let Err(end) = self.handle_buffered().await {
                // Replies to the requests before the one that ended it.
                let _ = self.write_queued(stream).await;
                return end;
            }
            if let Err(end) = self.write_queued(stream).await {
                return end;
            }
            let mut chunk = [0u8; READ_CHUNK_BYTES];
            let wake = self.wait(stream, &mut chunk).await;
            let step = match wake {
                Wake::Read(Ok(0)) => Err(End::Gone),
                Wake::Read(Ok(n)) => {
                    self.read.extend_from_slice(&chunk[..n]);
                    if n == chunk.len() && self.session.is_some() {
                        self.read_available(stream);
                    }
                    self.shard.metrics_mut().bytes_received += n as u64;
                    Ok(())
                }
                Wake::Read(Err(_)) => Err(End::Gone),
                Wake::Queued => Ok(()),
                Wake::Timer => self.on_timer(),
                Wake::Drain => Err(End::Close(CloseCode::GOING_AWAY, "server shutting down")),
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Takes whatever else the socket holds now, up to
    /// `WS_API_READ_BYTES_MAX`, without waiting: the requests a WebSocket
    /// API client pipelined are then answered after one durable commit
    /// rather than one commit per read chunk.
    fn read_available(&mut self, stream: &TcpStream) {
        use std::os::fd::AsRawFd;
        while self.read.len() < WS_API_READ_BYTES_MAX {
            let start = self.read.len();
            let room = (WS_API_READ_BYTES_MAX - start).min(WS_API_READ_STEP_BYTES);
            self.read.resize(start + room, 0);
            // SAFETY: the pointer and length describe the tail just
            // resized; MSG_DONTWAIT never blocks, and no other read of this
            // socket is in flight (the connection's task is here).
            let n = unsafe {
                libc::recv(
                    stream.as_raw_fd(),
                    self.read[start..].as_mut_ptr().cast(),
                    room,
                    libc::MSG_DONTWAIT,
                )
            };
            let got = usize::try_from(n).unwrap_or(0);
            self.read.truncate(start + got);
            self.shard.metrics_mut().bytes_received += got as u64;
            if got < room {
                return;
            }
        }
    }

    async fn wait(&self, stream: &mut TcpStream, chunk: &mut [u8]) -> Wake {
        let read = async { Wake::Read(stream.read(chunk).await) };
        let queued = async {
            futures_lite::future::poll_fn(|cx| self.out.poll_ready(cx)).await;
            Wake::Queued
        };
        let timer = async {
            glommio::timer::sleep(self.next_ping.saturating_duration_since(Instant::now())).await;
            Wake::Timer
        };
        let drain = async {
            self.shard.drained().await;
            Wake::Drain
        };
        futures_lite::future::or(
            read,
            futures_lite::future::or(queued, futures_lite::future::or(timer, drain)),
        )
        .await
    }

    fn on_timer(&mut self) -> Result<(), End> {
        if self.last_pong.elapsed() >= Duration::from_millis(PONG_TIMEOUT_MS) {
            return Err(End::Close(CloseCode::POLICY_VIOLATION, "no pong"));
        }
        self.next_ping = Instant::now() + Duration::from_millis(PING_INTERVAL_MS);
        let mut frame = Vec::with_capacity(2);
        ws::encode_ping(&mut frame, b"");
        self.queue(frame)
    }

    /// Writes every queued frame; an overflowed queue ends the connection.
    /// Frames queued together leave in one write of up to
    /// `WRITE_COALESCE_BYTES`: a batch of answers, or a burst of stream
    /// events, costs one send, not one per frame.
    async fn write_queued(&mut self, stream: &mut TcpStream) -> Result<(), End> {
        let mut pending: Vec<u8> = Vec::new();
        while let Some(frame) = self.out.pop() {
            {
                let mut m = self.shard.metrics_mut();
                m.bytes_sent += frame.len() as u64;
                m.ws_frames_sent += 1;
            }
            if pending.is_empty() && self.out.is_empty() {
                // The only frame: written as it is, not copied.
                stream.write_all(&frame).await.map_err(|_| End::Gone)?;
                continue;
            }
            pending.extend_from_slice(&frame);
            if pending.len() >= WRITE_COALESCE_BYTES || self.out.is_empty() {
                stream.write_all(&pending).await.map_err(|_| End::Gone)?;
                pending.clear();
            }
        }
        if self.out.is_overflowed() {
            return Err(End::Close(CloseCode::POLICY_VIOLATION, "slow consumer"));
        }
        if self.out.is_finished() {
            return Err(End::Close(CloseCode::NORMAL, "listenKey expired"));
        }
        Ok(())
    }

    /// Handles every whole client message in the read buffer, in batches
    /// of at most `WS_API_BATCH_REQUESTS_MAX` requests. WebSocket API
    /// answers of a batch wait until its last request ran and what they
    /// changed is durable, then leave together, in order, in one frame run.
    async fn handle_buffered(&mut self) -> Result<(), End> {
        // Requests are read in place: the buffer leaves `self` while they
        // run, and consumed messages are dropped from it once, at the end
        // (a read may hold a hundred pipelined requests).
        let mut buf = std::mem::take(&mut self.read);
        let mut start = 0;
        let ended = loop {
            let mut texts = Vec::new();
            let step = loop {
                match self.next_request(&mut buf, &mut start) {
                    Ok(Step::Request(text)) => {
                        texts.push(text);
                        if texts.len() == WS_API_BATCH_REQUESTS_MAX {
                            break Ok(true);
                        }
                    }
                    Ok(Step::Again) => {}
                    Ok(Step::NeedMore) => break Ok(false),
                    Err(end) => break Err(end),
                }
            };
            // Requests before the message that ended the connection are
            // answered first.
            if let Err(end) = self.answer(&buf, &texts).await {
                break Err(end);
            }
            match step {
                Ok(true) => {}
                Ok(false) => break Ok(()),
                Err(end) => break Err(end),
            }
        };
        buf.drain(..start);
        // An idle connection holds no read buffer.
        self.read = if buf.is_empty() { Vec::new() } else { buf };
        ended
    }

    /// Answers a batch of text requests read from `buf`.
    async fn answer(&mut self, buf: &[u8], texts: &[Text]) -> Result<(), End> {
        let texts: Vec<&str> = texts.iter().map(|text| text.resolve(buf)).collect();
        let Some(session) = self.session.as_mut() else {
            for text in texts {
                let reply = self.request(text).await;
                self.queue(ws::text_frame(&reply))?;
            }
            return Ok(());
        };
        if texts.is_empty() {
            return Ok(());
        }
        let mut frames = Vec::new();
        session.answer_all(self.shard, &self.out, &texts, &mut frames).await;
        if session.take_unsettled() {
            self.shard.settle().await;
        }
        let trailing = session.take_trailing();
        self.queue(frames)?;
        // The answers are queued as one run of frames; writing counts one.
        self.shard.metrics_mut().ws_frames_sent += texts.len() as u64 - 1;
        for frame in trailing {
            self.queue_shared(frame)?;
        }
        Ok(())
    }

    /// Reads one message from `buf` at `start` and moves `start` past it.
    fn next_request(&mut self, buf: &mut [u8], start: &mut usize) -> Result<Step, End> {
        if *start == buf.len() {
            return Ok(Step::NeedMore);
        }
        let base = buf.as_ptr() as usize;
        let read = self.reader.read(&mut buf[*start..], &self.limits).map_err(close_for)?;
        let consumed = read.consumed;
        let step = match read.message {
            Some(message) => match self.on_message(message, base)? {
                Some(text) => Step::Request(text),
                None => Step::Again,
            },
            None if consumed > 0 => Step::Again,
            None => Step::NeedMore,
        };
        *start += consumed;
        Ok(step)
    }

    /// Answers control frames at once; returns a text request to run. A
    /// text in one frame is returned as its place in the buffer that
    /// starts at address `base`.
    fn on_message(&mut self, message: Message<'_>, base: usize) -> Result<Option<Text>, End> {
        self.count_message()?;
        match message {
            Message::Text(Cow::Borrowed(text)) => {
                let at = text.as_ptr() as usize - base;
                Ok(Some(Text::Span(at..at + text.len())))
            }
            Message::Text(Cow::Owned(text)) => Ok(Some(Text::Owned(text))),
            Message::Binary(_) => Err(End::Close(
                CloseCode::UNSUPPORTED_DATA,
                "binary messages are not supported",
            )),
            Message::Ping(payload) => {
                let mut frame = Vec::with_capacity(2 + payload.len());
                ws::encode_pong(&mut frame, payload);
                self.queue(frame).map(|_| None)
            }
            Message::Pong(_) => {
                self.last_pong = Instant::now();
                Ok(None)
            }
            Message::Close(status) => Err(End::ClientClosed(status.map(|(code, _)| code))),
        }
    }

    fn count_message(&mut self) -> Result<(), End> {
        if self.window_start.elapsed() >= Duration::from_secs(1) {
            self.window_start = Instant::now();
            self.window_messages = 0;
        }
        self.window_messages += 1;
        let max = match self.session {
            Some(_) => self.shard.ws_config().api_messages_per_second_max,
            None => WS_MESSAGES_PER_SECOND_MAX,
        };
        if self.window_messages > max {
            return Err(End::Close(CloseCode::POLICY_VIOLATION, "too many messages"));
        }
        Ok(())
    }

    fn queue(&self, frame: Vec<u8>) -> Result<(), End> {
        self.queue_shared(Rc::from(frame))
    }

    fn queue_shared(&self, frame: Rc<[u8]>) -> Result<(), End> {
        match self.out.push(frame) {
            crate::streams::Push::Queued => Ok(()),
            // The connection's last frame is queued; it closes once written.
            crate::streams::Push::Dropped if self.out.is_finished() => Ok(()),
            _ => Err(End::Close(CloseCode::POLICY_VIOLATION, "slow consumer")),
        }
    }

    /// Runs one JSON request and returns the reply's text.
    async fn request(&mut self, text: &str) -> String {
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return error_reply(CODE_INVALID_JSON, &format!("Invalid JSON: {e}"), &Value::Null),
        };
        let id = value.get("id").cloned().unwrap_or(Value::Null);
        if !(id.is_null() || id.is_u64() || id.is_string()) {
            return error_reply(
                CODE_INVALID_REQUEST,
                "Invalid request: request ID must be an unsigned integer",
                &Value::Null,
            );
        }
        let params = value.get("params");
        let result = match value.get("method").and_then(Value::as_str) {
            Some("SUBSCRIBE") => self.subscribe(params).await,
            Some("UNSUBSCRIBE") => self.unsubscribe(params),
            Some("LIST_SUBSCRIPTIONS") => Ok(self.list()),
            Some("SET_PROPERTY") => self.set_property(params),
            Some("GET_PROPERTY") => self.get_property(params),
            Some(other) => Err((
                CODE_INVALID_REQUEST,
                format!(
                    "Invalid request: unknown variant {other}, expected one of SUBSCRIBE, UNSUBSCRIBE, \
                     LIST_SUBSCRIPTIONS, SET_PROPERTY, GET_PROPERTY"
                ),
            )),
            None => Err((
                CODE_INVALID_REQUEST,
                "Invalid request: missing field `method`".to_string(),
            )),
        };
        match result {
            Ok(result) => serde_json::json!({ "result": result, "id": id }).to_string(),
            Err((code, msg)) => error_reply(code, &msg, &id),
        }
    }

    fn stream_params(&self, params: Option<&Value>) -> Result<Vec<StreamKey>, (i64, String)> {
        let names = params.and_then(Value::as_array).ok_or_else(|| {
            (
                CODE_INVALID_REQUEST,
                "Invalid request: params must be an array of stream names".to_string(),
            )
        })?;
        let trading = self.shard.trading();
        names
            .iter()
            .map(|name| {
                let name = name.as_str().unwrap_or("");
                StreamKey::parse(name, &trading)
                    .ok_or_else(|| (CODE_INVALID_REQUEST, format!("Invalid request: unknown stream {name}")))
            })
            .collect()
    }

    async fn subscribe(&mut self, params: Option<&Value>) -> Result<Value, (i64, String)> {
        let keys = self.stream_params(params)?;
        let new: Vec<StreamKey> = keys.into_iter().filter(|k| !self.subscriptions.contains(k)).collect();
        if self.subscriptions.len() + new.len() > WS_STREAMS_PER_CONNECTION_MAX {
            return Err((
                CODE_INVALID_REQUEST,
                format!("Invalid request: too many streams; at most {WS_STREAMS_PER_CONNECTION_MAX}"),
            ));
        }
        for key in new {
            if self.subscriptions.contains(&key) {
                continue;
            }
            publish::subscribe(self.shard, key, &self.out).await.map_err(|_| {
                (
                    CODE_INVALID_REQUEST,
                    "Invalid request: stream unavailable; try again".to_string(),
                )
            })?;
            self.subscriptions.push(key);
        }
        Ok(Value::Null)
    }

    fn unsubscribe(&mut self, params: Option<&Value>) -> Result<Value, (i64, String)> {
        let keys = self.stream_params(params)?;
        for key in keys {
            if let Some(i) = self.subscriptions.iter().position(|k| *k == key) {
                self.subscriptions.remove(i);
                publish::unsubscribe(self.shard, key, &self.out);
            }
        }
        Ok(Value::Null)
    }

    fn list(&self) -> Value {
        let trading = self.shard.trading();
        Value::Array(
            self.subscriptions
                .iter()
                .map(|k| Value::String(k.name(&trading)))
                .collect(),
        )
    }

    fn set_property(&mut self, params: Option<&Value>) -> Result<Value, (i64, String)> {
        let params = params.and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
        match params {
            [Value::String(name), value] if name == "combined" => match value.as_bool() {
                Some(combined) => {
                    self.out.set_combined(combined);
                    Ok(Value::Null)
                }
                None => Err((CODE_INVALID_VALUE, "Invalid value type: expected Boolean".to_string())),
            },
            [Value::String(_), _] => Err((CODE_UNKNOWN_PROPERTY, "Unknown property".to_string())),
            _ => Err((
                CODE_INVALID_REQUEST,
                "Invalid request: property name must be a string".to_string(),
            )),
        }
    }

    fn get_property(&self, params: Option<&Value>) -> Result<Value, (i64, String)> {
        let params = params.and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
        match params {
            [Value::String(name)] if name == "combined" => Ok(Value::Bool(self.out.is_combined())),
            [Value::String(_)] => Err((CODE_UNKNOWN_PROPERTY, "Unknown property".to_string())),
            _ => Err((
                CODE_INVALID_REQUEST,
                "Invalid request: property name must be a string".to_string(),
            )),
        }
    }

    /// Sends the close frame `end` calls for.
    async fn close(&mut self, stream: &mut TcpStream, end: End) -> io::Result<()> {
        let (code, reason) = match end {
            End::Gone => return Ok(()),
            End::ClientClosed(code) => (code.unwrap_or(CloseCode::NORMAL), ""),
            End::Close(code, reason) => (code, reason),
        };
        let code = if code.is_valid_on_wire() {
            code
        } else {
            CloseCode::NORMAL
        };
        let mut frame = Vec::with_capacity(2 + 2 + reason.len());
        ws::encode_close(&mut frame, code, reason);
        stream.write_all(&frame).await?;
        stream.close().await
    }
}

fn close_for(reason: CloseReason) -> End {
    End::Close(reason.code(), reason.message())
}

fn error_reply(code: i64, msg: &str, id: &Value) -> String {
    serde_json::json!({ "error": { "code": code, "msg": msg }, "id": id }).to_string()
}
