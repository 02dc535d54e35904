//! HTTP/1.1 without I/O: request heads parsed into byte ranges of the
//! connection's read buffer, form/query parameters, and response encoding.
//!
//! The connection loop (`conn`) owns the socket and the buffers; this module
//! only looks at bytes, so the parser can be fed anything in tests and
//! fuzzing. A head is described by ranges, not borrows, so a request can be
//! held across an await while the buffer stays owned by the connection.
//!
//! **Invariant:** every error this module returns carries the status, the
//! Binance-style code and message the client gets, and whether the
//! connection must close (it must whenever framing is no longer known).

use crate::binance;
use std::borrow::Cow;
use std::ops::Range;

/// Methods tradsys serves; anything else is `Other` and gets 405.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
    Head,
    Other,
}

impl Method {
    fn from_bytes(method: &str) -> Method {
        match method {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "HEAD" => Method::Head,
            _ => Method::Other,
        }
    }
}

/// A parsed request head; ranges index the buffer handed to [`parse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub method: Method,
    pub path: Range<usize>,
    /// The raw query string, without '?'; empty when absent.
    pub query: Range<usize>,
    pub body: Range<usize>,
    /// Bytes from the start of the buffer to the end of the body.
    pub len: usize,
    pub keep_alive: bool,
    /// The body is `application/x-www-form-urlencoded`.
    pub form_body: bool,
    /// The value of `X-MBX-APIKEY`, if sent.
    pub api_key: Option<Range<usize>>,
    /// The value of `X-Admin-Token`, if sent (admin API only).
    pub admin_token: Option<Range<usize>>,
    /// The client sent `Expect: 100-continue`.
    pub expect_continue: bool,
    /// The WebSocket handshake headers, for `ws::handshake`.
    pub upgrade: UpgradeHeaders,
    /// What `Accept-Encoding` allows; identity only when absent or malformed.
    pub accept_encoding: AcceptEncoding,
}

/// Values of the headers an RFC 6455 upgrade depends on, when sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpgradeHeaders {
    pub upgrade: Option<Range<usize>>,
    /// The `Connection` line naming `upgrade`, else the last one.
    pub connection: Option<Range<usize>>,
    pub key: Option<Range<usize>>,
    pub version: Option<Range<usize>>,
}

impl UpgradeHeaders {
    /// The handshake request these headers make, over `buf`.
    pub fn request<'a>(&self, method: Method, buf: &'a [u8]) -> UpgradeRequest<'a> {
        let value = |r: &Option<Range<usize>>| r.clone().map(|r| &buf[r]);
        UpgradeRequest {
            method,
            upgrade: value(&self.upgrade),
            connection: value(&self.connection),
            key: value(&self.key),
            version: value(&self.version),
        }
    }
}

/// The parts of a request the handshake depends on, as the raw header
/// values (`None` when a header is absent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpgradeRequest<'a> {
    pub method: Method,
    pub upgrade: Option<&'a [u8]>,
    pub connection: Option<&'a [u8]>,
    pub key: Option<&'a [u8]>,
    pub version: Option<&'a [u8]>,
}

/// An error that the client sees as `{"code":..,"msg":..}` with `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpError {
    pub status: u16,
    pub code: i32,
    pub msg: String,
    /// Framing is lost or the client is hostile: answer, then close.
    pub close: bool,
}

impl HttpError {
    pub fn new(status: u16, code: i32, msg: impl Into<String>) -> HttpError {
        HttpError {
            status,
            code,
            msg: msg.into(),
            close: false,
        }
    }

    fn fatal(status: u16, code: i32, msg: impl Into<String>) -> HttpError {
        HttpError {
            close: true,
            ..HttpError::new(status, code, msg)
        }
    }
}

/// Parses one request from the start of `buf`.
///
/// `Ok(None)`: more bytes are needed; `needed_len` tells how many the whole
/// request takes once the head is known. Errors mark whether to close.
pub fn parse(buf: &[u8], limits: &HttpLimits) -> Result<Parsed, HttpError> {
    let mut storage = [httparse::EMPTY_HEADER; HEADERS_STACK_MAX];
    let mut heap;
    let headers: &mut [httparse::Header] = if limits.headers_count_max <= HEADERS_STACK_MAX {
        &mut storage[..limits.headers_count_max]
    } else {
        heap = vec![httparse::EMPTY_HEADER; limits.headers_count_max];
        &mut heap
    };
    let mut req = httparse::Request::new(headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.header_bytes_max {
                return Err(too_large_head());
            }
            return Ok(Parsed::Partial { needed_len: None });
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::fatal(431, binance::UNKNOWN, "Too many request headers."));
        }
        Err(e) => {
            return Err(HttpError::fatal(
                400,
                binance::UNKNOWN,
                format!("Malformed HTTP request: {e}."),
            ))
        }
    };
    if head_len > limits.header_bytes_max {
        return Err(too_large_head());
    }
    let base = buf.as_ptr() as usize;
    let range_of = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let target = req.path.unwrap_or("");
    let (path, query) = target_ranges(target, range_of(target.as_bytes()))?;
    let http10 = req.version == Some(0);
    let mut frame = Framing {
        keep_alive: !http10,
        ..Framing::default()
    };
    for header in req.headers.iter() {
        frame.read(header, &range_of)?;
    }
    let content_length = body_len(&frame, limits)?;
    let head = Head {
        method: Method::from_bytes(req.method.unwrap_or("")),
        path,
        query,
        body: head_len..head_len + content_length,
        len: head_len + content_length,
        keep_alive: frame.keep_alive,
        form_body: frame.form_body,
        api_key: frame.api_key,
        admin_token: frame.admin_token,
        expect_continue: frame.expect_continue,
        upgrade: frame.upgrade,
        accept_encoding: frame.accept_encoding.finish(),
    };
    if buf.len() < head.len {
        return Ok(Parsed::Partial { needed_len: Some(head) });
    }
    Ok(Parsed::Complete(head))
}

/// The path and the query of a request target (`range`: where `target`
/// is in the buffer), which must start with '/'.
fn target_ranges(target: &str, range: Range<usize>) -> Result<(Range<usize>, Range<usize>), HttpError> {
    if !target.starts_with('/') {
        return Err(HttpError::fatal(
            400,
            binance::UNKNOWN,
            "Malformed HTTP request: the target must start with '/'.",
        ));
    }
    Ok(match target.find('?') {
        Some(q) => (range.start..range.start + q, range.start + q + 1..range.end),
        None => (range.clone(), range.end..range.end),
    })
}

/// The body length the framing headers announce: Content-Length bodies
/// only (411 for chunked), at most `body_bytes_max` (413).
fn body_len(frame: &Framing, limits: &HttpLimits) -> Result<usize, HttpError> {
    if frame.chunked {
        return Err(HttpError::fatal(
            411,
            binance::UNKNOWN,
            "Chunked request bodies are not supported; send Content-Length.",
        ));
    }
    let content_length = frame.content_length.unwrap_or(0);
    if content_length > limits.body_bytes_max {
        return Err(HttpError::fatal(
            413,
            binance::UNKNOWN,
            format!("Request body larger than {} bytes.", limits.body_bytes_max),
        ));
    }
    Ok(content_length)
}

/// Headers parsed on the stack; more than this (if configured) go to the heap.
const HEADERS_STACK_MAX: usize = 64;

/// What [`parse`] found at the start of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Complete(Head),
    /// More bytes are needed. With the head known, `needed_len` holds it
    /// (its `len` is the full request length).
    Partial {
        needed_len: Option<Head>,
    },
}

fn too_large_head() -> HttpError {
    HttpError::fatal(431, binance::UNKNOWN, "Request line and headers too large.")
}

/// What the headers say about framing and the connection.
#[derive(Default)]
struct Framing {
    keep_alive: bool,
    chunked: bool,
    content_length: Option<usize>,
    form_body: bool,
    api_key: Option<Range<usize>>,
    admin_token: Option<Range<usize>>,
    expect_continue: bool,
    upgrade: UpgradeHeaders,
    accept_encoding: AcceptEncodingList,
}

impl Framing {
    fn read(&mut self, header: &httparse::Header, range_of: &dyn Fn(&[u8]) -> Range<usize>) -> Result<(), HttpError> {
        let name = header.name;
        let value = header.value;
        if name.eq_ignore_ascii_case("content-length") {
            let length = parse_content_length(value)?;
            if self.content_length.is_some_and(|l| l != length) {
                return Err(HttpError::fatal(
                    400,
                    binance::UNKNOWN,
                    "Conflicting Content-Length headers.",
                ));
            }
            self.content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            self.chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            let names_upgrade = value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
            if names_upgrade || self.upgrade.connection.is_none() {
                self.upgrade.connection = Some(range_of(value));
            }
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    self.keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("content-type") {
            let media = value.split(|&b| b == b';').next().unwrap_or(b"").trim_ascii();
            self.form_body = media.eq_ignore_ascii_case(b"application/x-www-form-urlencoded");
        } else if name.eq_ignore_ascii_case("x-mbx-apikey") {
            self.api_key = Some(range_of(value));
        } else if name.eq_ignore_ascii_case("x-admin-token") {
            self.admin_token = Some(range_of(value));
        } else if name.eq_ignore_ascii_case("upgrade") {
            self.upgrade.upgrade = Some(range_of(value));
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            self.upgrade.key = Some(range_of(value));
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            self.upgrade.version = Some(range_of(value));
        } else if name.eq_ignore_ascii_case("expect") {
            self.expect_continue = value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("accept-encoding") {
            self.accept_encoding.add(value);
        }
        Ok(())
    }
}

fn parse_content_length(value: &[u8]) -> Result<usize, HttpError> {
    let digits = value.trim_ascii();
    let bad = || HttpError::fatal(400, binance::UNKNOWN, "Malformed HTTP request: invalid Content-Length.");
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    Ok(digits.iter().fold(0usize, |n, &d| n * 10 + usize::from(d - b'0')))
}

/// Codings one request's `Accept-Encoding` lines may name together; a
/// longer list is treated as malformed. Real clients send two to five.
pub const ACCEPT_ENCODING_CODINGS_MAX: usize = 16;

/// Weights are in thousandths, as RFC 9110 writes them with at most three
/// decimals.
const Q_MAX: u16 = 1000;

/// What a request's `Accept-Encoding` (RFC 9110 §12.5.3) allows, reduced
/// to the codings the server can send: gzip and none (identity). Weights
/// are in thousandths; 0 refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcceptEncoding {
    /// gzip's weight: its own entry (or `x-gzip`'s), else `*`'s, else 0.
    pub gzip_q: u16,
    /// identity's weight when the header gives one (its own entry or
    /// `*`'s); `None`: acceptable, and preferred to nothing else.
    pub identity_q: Option<u16>,
}

impl AcceptEncoding {
    /// No header, or one the server could not read: the body goes as is.
    pub const IDENTITY: AcceptEncoding = AcceptEncoding {
        gzip_q: 0,
        identity_q: None,
    };

    /// Whether the client takes gzip at least as gladly as no coding. A
    /// tie goes to gzip: the server's preference, since it saves bytes.
    pub fn prefers_gzip(&self) -> bool {
        self.gzip_q > 0 && self.identity_q.is_none_or(|identity| self.gzip_q >= identity)
    }

    /// Parses the values of a request's `Accept-Encoding` lines, in order,
    /// as one list.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> AcceptEncoding {
        let mut list = AcceptEncodingList::default();
        for value in values {
            list.add(value);
        }
        list.finish()
    }
}

/// `Accept-Encoding` lines read so far. A malformed element spoils the
/// whole header (the response is then not encoded), never the request.
#[derive(Debug, Default)]
struct AcceptEncodingList {
    sent: bool,
    malformed: bool,
    codings: usize,
    gzip: Option<u16>,
    identity: Option<u16>,
    any: Option<u16>,
}

impl AcceptEncodingList {
    fn add(&mut self, value: &[u8]) {
        self.sent = true;
        // Empty elements (", gzip") are allowed by RFC 9110 §5.6.1.
        for element in value.split(|&b| b == b',').map(trim_ows).filter(|e| !e.is_empty()) {
            self.codings += 1;
            if self.malformed || self.codings > ACCEPT_ENCODING_CODINGS_MAX {
                self.malformed = true;
                return;
            }
            match coding_and_weight(element) {
                Some((coding, q)) => self.weigh(coding, q),
                None => self.malformed = true,
            }
        }
    }

    /// Records a coding's weight. A coding named twice keeps its lower
    /// weight, so that a refusal (q=0) is never undone by another entry.
    fn weigh(&mut self, coding: &[u8], q: u16) {
        let slot = if coding.eq_ignore_ascii_case(b"gzip") || coding.eq_ignore_ascii_case(b"x-gzip") {
            &mut self.gzip
        } else if coding.eq_ignore_ascii_case(b"identity") {
            &mut self.identity
        } else if coding == b"*" {
            &mut self.any
        } else {
            // A coding the server does not produce (br, deflate, zstd...).
            return;
        };
        *slot = Some(slot.map_or(q, |earlier| earlier.min(q)));
    }

    fn finish(&self) -> AcceptEncoding {
        if !self.sent || self.malformed {
            return AcceptEncoding::IDENTITY;
        }
        AcceptEncoding {
            gzip_q: self.gzip.or(self.any).unwrap_or(0),
            identity_q: self.identity.or(self.any),
        }
    }
}

/// Optional whitespace (RFC 9110 §5.6.3) trimmed from both ends.
fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// A token character (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `coding [ OWS ";" OWS "q=" qvalue ]`, the weight in thousandths
/// (1000 when absent); `None` when the element is not of that form.
fn coding_and_weight(element: &[u8]) -> Option<(&[u8], u16)> {
    let mut parts = element.splitn(2, |&b| b == b';');
    let coding = trim_ows(parts.next()?);
    if coding.is_empty() || !coding.iter().all(|&b| is_tchar(b)) {
        return None;
    }
    let q = match parts.next() {
        None => Q_MAX,
        Some(weight) => {
            let weight = trim_ows(weight);
            let value = weight.strip_prefix(b"q=").or_else(|| weight.strip_prefix(b"Q="))?;
            qvalue(value)?
        }
    };
    Some((coding, q))
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in
/// thousandths.
fn qvalue(text: &[u8]) -> Option<u16> {
    let (whole, fraction) = match text.iter().position(|&b| b == b'.') {
        Some(dot) => (&text[..dot], &text[dot + 1..]),
        None => (text, &text[text.len()..]),
    };
    if fraction.len() > 3 || !fraction.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let thousandths = fraction
        .iter()
        .chain(std::iter::repeat(&b'0'))
        .take(3)
        .fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    match whole {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(Q_MAX),
        _ => None,
    }
}

/// Decoded request parameters: the query's first, then the form body's, so
/// that a lookup finds the query's value first (Binance's rule). Values
/// borrow from the request buffer; only ones with escapes are copied.
#[derive(Debug, Default)]
pub struct Params<'a> {
    pairs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Params<'a> {
    /// Decodes `query` and, when it is a form, `body`.
    pub fn parse(query: &'a [u8], form_body: Option<&'a [u8]>, count_max: usize) -> Result<Params<'a>, HttpError> {
        let mut params = Params::default();
        params.add(query, count_max)?;
        if let Some(body) = form_body {
            params.add(body, count_max)?;
        }
        Ok(params)
    }

    fn add(&mut self, encoded: &'a [u8], count_max: usize) -> Result<(), HttpError> {
        for pair in encoded.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
            if self.pairs.len() >= count_max {
                return Err(HttpError::new(
                    400,
                    binance::TOO_MANY_PARAMETERS,
                    format!("Too many parameters; maximum is {count_max}."),
                ));
            }
            let (key, value) = match pair.iter().position(|&b| b == b'=') {
                Some(eq) => (&pair[..eq], &pair[eq + 1..]),
                None => (pair, &pair[pair.len()..]),
            };
            let key = percent_decode(key).ok_or_else(|| illegal_chars("a parameter name"))?;
            let value = percent_decode(value).ok_or_else(|| illegal_chars(&format!("'{key}'")))?;
            self.pairs.push((key, value));
        }
        Ok(())
    }

    /// Parameters decoded elsewhere (the WebSocket API's JSON), in order.
    pub fn from_pairs(pairs: Vec<(Cow<'a, str>, Cow<'a, str>)>) -> Params<'a> {
        Params { pairs }
    }

    /// The value of `name`: the query's when both query and body carry it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_ref())
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Every name and value, in the order [`Params::get`] searches them.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

fn illegal_chars(what: &str) -> HttpError {
    HttpError::new(
        400,
        binance::ILLEGAL_CHARS,
        format!("Illegal characters found in parameter {what}."),
    )
}

/// Decodes `%XX` and `+` (form encoding); `None` for a bad escape or text
/// that is not UTF-8. Text without escapes is borrowed, not copied.
pub fn percent_decode(encoded: &[u8]) -> Option<Cow<'_, str>> {
    if !encoded.iter().any(|&b| b == b'%' || b == b'+') {
        return std::str::from_utf8(encoded).ok().map(Cow::Borrowed);
    }
    let mut out = Vec::with_capacity(encoded.len());
    let mut i = 0;
    while i < encoded.len() {
        match encoded[i] {
            b'%' => {
                let hex = encoded.get(i + 1..i + 3)?;
                let high = (hex[0] as char).to_digit(16)?;
                let low = (hex[1] as char).to_digit(16)?;
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// The reason phrase of each status tradsys sends.
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        418 => "I'm a teapot",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

pub const CONTENT_JSON: &str = "application/json;charset=UTF-8";
pub const CONTENT_PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A response about to be encoded.
pub struct Response<'a, H: AsRef<str> = &'a str> {
    pub status: u16,
    pub content_type: &'static str,
    /// Extra headers, each a full "Name: value" without CRLF.
    pub headers: &'a [H],
    pub body: &'a [u8],
    /// The body's content coding (`gzip`), when it has one.
    pub content_encoding: Option<&'static str>,
    /// Whether the body would have been different with another
    /// `Accept-Encoding`: then caches must be told (`Vary`).
    pub vary_accept_encoding: bool,
    pub close: bool,
    /// HEAD: send the headers of the body but not the body.
    pub head_only: bool,
}

/// The status line and `Content-Type`, without the final CRLF.
fn encode_status(out: &mut Vec<u8>, status: u16, content_type: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(content_type.as_bytes());
}

/// Appends the encoded response to `out`.
pub fn encode<H: AsRef<str>>(out: &mut Vec<u8>, response: &Response<'_, H>) {
    let mut length = itoa::Buffer::new();
    encode_status(out, response.status, response.content_type);
    out.extend_from_slice(b"\r\nContent-Length: ");
    out.extend_from_slice(length.format(response.body.len()).as_bytes());
    if let Some(coding) = response.content_encoding {
        out.extend_from_slice(b"\r\nContent-Encoding: ");
        out.extend_from_slice(coding.as_bytes());
    }
    if response.vary_accept_encoding {
        out.extend_from_slice(b"\r\nVary: Accept-Encoding");
    }
    for header in response.headers {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(header.as_ref().as_bytes());
    }
    if response.close {
        out.extend_from_slice(b"\r\nConnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
    if !response.head_only {
        out.extend_from_slice(response.body);
    }
}

/// The head of a response whose body follows in chunks
/// (`Transfer-Encoding: chunked`): for a body whose length is not known
/// when it starts, such as an export streamed from a cursor. The
/// connection stays usable after the last chunk.
pub fn encode_chunked_head<H: AsRef<str>>(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    headers: &[H],
    close: bool,
) {
    encode_status(out, status, content_type);
    out.extend_from_slice(b"\r\nTransfer-Encoding: chunked");
    encode_head_end(out, headers, close);
}

/// The head of a response of `length` bytes that follow as they are read
/// (a file): the connection must close if fewer come.
pub fn encode_sized_head<H: AsRef<str>>(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    headers: &[H],
    length: u64,
    close: bool,
) {
    encode_status(out, status, content_type);
    out.extend_from_slice(b"\r\nContent-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
    encode_head_end(out, headers, close);
}

/// The extra headers, `Connection: close` if asked, and the blank line.
fn encode_head_end<H: AsRef<str>>(out: &mut Vec<u8>, headers: &[H], close: bool) {
    for header in headers {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(header.as_ref().as_bytes());
    }
    if close {
        out.extend_from_slice(b"\r\nConnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
}

/// Appends `data` as one chunk of a chunked body; nothing for empty data
/// (an empty chunk is the last one).
pub fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let mut size = [0u8; 16];
    let mut at = size.len();
    let mut left = data.len();
    while left > 0 {
        at -= 1;
        size[at] = b"0123456789abcdef"[left % 16];
        left /= 16;
    }
    out.extend_from_slice(&size[at..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The end of a chunked body: the last (empty) chunk and no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends `{"code":..,"msg":..}` for `error` as a full response.
pub fn encode_error(out: &mut Vec<u8>, error: &HttpError, headers: &[&str], close: bool) {
    let body = error_body(error.code, &error.msg);
    encode(
        out,
        &Response {
            status: error.status,
            content_type: CONTENT_JSON,
            headers,
            body: body.as_bytes(),
            content_encoding: None,
            vary_accept_encoding: false,
            close: close || error.close,
            head_only: false,
        },
    );
}

/// The Binance error body.
pub fn error_body(code: i32, msg: &str) -> String {
    serde_json::json!({ "code": code, "msg": msg }).to_string()
}

/// Limits of the HTTP layer, each named with its unit last.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    pub header_bytes_max: usize,
    pub headers_count_max: usize,
    pub body_bytes_max: usize,
    pub params_count_max: usize,
    pub header_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub write_timeout_ms: u64,
    /// The kernel send buffer of a connection (0: autotuned).
    pub socket_send_bytes: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn limits() -> HttpLimits {
        HttpLimits::default()
    }

    fn complete(raw: &[u8]) -> Head {
        match parse(raw, &limits()) {
            Ok(Parsed::Complete(head)) => head,
            other => panic!("expected a complete request, got {other:?}"),
        }
    }

    fn status_of(raw: &[u8]) -> u16 {
        parse(raw, &limits()).unwrap_err().status
    }

    #[test]
    fn parses_get_with_query() {
        let raw = b"GET /api/v3/depth?symbol=BTCUSDT&limit=5 HTTP/1.1\r\nHost: x\r\n\r\n";
        let head = complete(raw);
        assert_eq!(head.method, Method::Get);
        assert_eq!(&raw[head.path.clone()], b"/api/v3/depth");
        assert_eq!(&raw[head.query.clone()], b"symbol=BTCUSDT&limit=5");
        assert_eq!(head.len, raw.len());
        assert!(head.keep_alive);
    }

    #[test]
    fn waits_for_the_body() {
        let raw = b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\nab";
        match parse(raw, &limits()).unwrap() {
            Parsed::Partial { needed_len: Some(head) } => assert_eq!(head.len, raw.len() + 3),
            other => panic!("{other:?}"),
        }
        let mut full = raw.to_vec();
        full.extend_from_slice(b"c=1");
        let head = complete(&full);
        assert!(head.form_body);
        assert_eq!(&full[head.body], b"abc=1");
    }

    #[test]
    fn connection_semantics() {
        let table: &[(&[u8], bool)] = &[
            (b"GET / HTTP/1.1\r\n\r\n", true),
            (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        ];
        for (raw, keep_alive) in table {
            assert_eq!(
                complete(raw).keep_alive,
                *keep_alive,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn errors_have_statuses() {
        let big_header = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        let table: &[(&[u8], u16)] = &[
            (b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
            (b"POST / HTTP/1.1\r\nContent-Length: 70000\r\n\r\n", 413),
            (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            (b"GET http://x/ HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400),
            (b"\x00\x01\x02 / HTTP/1.1\r\n\r\n", 400),
            (big_header.as_bytes(), 431),
        ];
        for (raw, status) in table {
            assert_eq!(
                status_of(raw),
                *status,
                "{}",
                String::from_utf8_lossy(&raw[..raw.len().min(60)])
            );
        }
        let unfinished_line = vec![b'a'; 8193];
        assert_eq!(status_of(&unfinished_line), 431);
        let mut unfinished_head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        unfinished_head.resize(8193, b'a');
        assert_eq!(status_of(&unfinished_head), 431);
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut raw = String::from("GET / HTTP/1.1\r\n");
        for i in 0..65 {
            raw.push_str(&format!("X-{i}: 1\r\n"));
        }
        raw.push_str("\r\n");
        assert_eq!(status_of(raw.as_bytes()), 431);
    }

    #[test]
    fn query_wins_over_body() {
        let params = Params::parse(
            b"symbol=BTCUSDT&side=BUY",
            Some(b"side=SELL&quantity=1.5&note=a+b%21"),
            128,
        )
        .unwrap();
        assert_eq!(params.get("symbol"), Some("BTCUSDT"));
        assert_eq!(params.get("side"), Some("BUY"));
        assert_eq!(params.get("quantity"), Some("1.5"));
        assert_eq!(params.get("note"), Some("a b!"));
        assert_eq!(params.get("missing"), None);
        assert_eq!(params.len(), 5);
    }

    #[test]
    fn bad_params() {
        let table: &[(&[u8], i32)] = &[
            (b"a=%zz", binance::ILLEGAL_CHARS),
            (b"a=%ff", binance::ILLEGAL_CHARS),
            (b"a=1&b=2&c=3", binance::TOO_MANY_PARAMETERS),
        ];
        for (query, code) in table {
            assert_eq!(Params::parse(query, None, 2).unwrap_err().code, *code);
        }
    }

    #[test]
    fn encodes_chunked_bodies() {
        let mut out = Vec::new();
        encode_chunked_head(&mut out, 200, "text/csv", &["X-A: 1"], false);
        encode_chunk(&mut out, b"");
        encode_chunk(&mut out, &[b'a'; 26]);
        encode_chunk(&mut out, b"0123456789");
        out.extend_from_slice(LAST_CHUNK);
        let expected = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/csv\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n1a\r\n{}\r\na\r\n0123456789\r\n0\r\n\r\n",
            "a".repeat(26)
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        let mut out = Vec::new();
        encode_chunked_head::<&str>(&mut out, 200, "text/csv", &[], true);
        assert!(out.ends_with(b"chunked\r\nConnection: close\r\n\r\n"));
        let mut out = Vec::new();
        encode_chunk(&mut out, &vec![b'x'; 0x10000]);
        assert!(out.starts_with(b"10000\r\nxx"));
    }

    /// (header lines, gzip weight, identity weight, gzip preferred)
    type AcceptCase<'a> = (&'a [&'a str], u16, Option<u16>, bool);

    #[test]
    fn accept_encoding_weights() {
        let table: &[AcceptCase] = &[
            // No header, or an empty one: identity only.
            (&[], 0, None, false),
            (&[""], 0, None, false),
            (&["gzip"], 1000, None, true),
            (&["GZip"], 1000, None, true),
            (&["x-gzip"], 1000, None, true),
            // What requests, aiohttp and curl --compressed send.
            (&["gzip, deflate"], 1000, None, true),
            (&["gzip, deflate, br, zstd"], 1000, None, true),
            (&["deflate, gzip;q=1.0, *;q=0.5"], 1000, Some(500), true),
            (&["br"], 0, None, false),
            (&["identity"], 0, Some(1000), false),
            (&["gzip;q=0"], 0, None, false),
            (&["gzip;q=0.000"], 0, None, false),
            (&["gzip;q=0.5"], 500, None, true),
            (&["gzip;Q=0.25"], 250, None, true),
            (&["gzip ; q=0.3"], 300, None, true),
            (&["\tgzip\t;\tq=0.3 "], 300, None, true),
            (&["gzip;q=1."], 1000, None, true),
            (&["gzip;q=0."], 0, None, false),
            (&["*"], 1000, Some(1000), true),
            (&["*;q=0"], 0, Some(0), false),
            (&["*;q=0, gzip"], 1000, Some(0), true),
            (&["gzip;q=0, *"], 0, Some(1000), false),
            (&["identity;q=0, gzip;q=0.1"], 100, Some(0), true),
            // The client prefers no coding to gzip; a tie goes to gzip.
            (&["identity, gzip;q=0.5"], 500, Some(1000), false),
            (&["identity;q=0.5, gzip;q=0.5"], 500, Some(500), true),
            (&["*;q=0.8, gzip;q=0.5"], 500, Some(800), false),
            // A coding named twice keeps its lower weight.
            (&["gzip, gzip;q=0"], 0, None, false),
            (&["gzip;q=0", "gzip"], 0, None, false),
            // Lines are one list; empty elements are allowed.
            (&["identity;q=0.1", "gzip"], 1000, Some(100), true),
            (&[", ,gzip,"], 1000, None, true),
            // Malformed: the whole header counts as absent.
            (&["gzip;q=2"], 0, None, false),
            (&["gzip;q=1.5"], 0, None, false),
            (&["gzip;q=1.001"], 0, None, false),
            (&["gzip;q=0.0001"], 0, None, false),
            (&["gzip;q=.5"], 0, None, false),
            (&["gzip;q=-1"], 0, None, false),
            (&["gzip;q = 0.5"], 0, None, false),
            (&["gzip;q="], 0, None, false),
            (&["gzip;level=1"], 0, None, false),
            (&["gzip;q=0.5;q=0.4"], 0, None, false),
            (&["gzip;"], 0, None, false),
            (&[";q=1"], 0, None, false),
            (&["gz ip"], 0, None, false),
            (&["gzip, br\u{e9}"], 0, None, false),
            (&["gzip", "q=0.5"], 0, None, false),
        ];
        for (lines, gzip_q, identity_q, preferred) in table {
            let accept = AcceptEncoding::parse(lines.iter().map(|l| l.as_bytes()));
            assert_eq!(
                (accept.gzip_q, accept.identity_q, accept.prefers_gzip()),
                (*gzip_q, *identity_q, *preferred),
                "{lines:?}"
            );
        }
    }

    #[test]
    fn accept_encoding_lists_are_bounded() {
        let at_max = vec!["br"; ACCEPT_ENCODING_CODINGS_MAX - 1].join(", ") + ", gzip";
        assert!(AcceptEncoding::parse([at_max.as_bytes()]).prefers_gzip());
        let over = vec!["br"; ACCEPT_ENCODING_CODINGS_MAX].join(", ") + ", gzip";
        assert_eq!(AcceptEncoding::parse([over.as_bytes()]), AcceptEncoding::IDENTITY);
        let split = ["br"; ACCEPT_ENCODING_CODINGS_MAX].map(str::as_bytes);
        let over_lines = split.into_iter().chain([b"gzip".as_slice()]);
        assert_eq!(AcceptEncoding::parse(over_lines), AcceptEncoding::IDENTITY);
    }

    #[test]
    fn the_head_carries_accept_encoding() {
        let raw = b"GET / HTTP/1.1\r\nAccept-Encoding: br\r\naccept-encoding: gzip;q=0.9\r\n\r\n";
        assert_eq!(
            complete(raw).accept_encoding,
            AcceptEncoding {
                gzip_q: 900,
                identity_q: None
            }
        );
        let malformed = b"GET / HTTP/1.1\r\nAccept-Encoding: gzip;q=9\r\n\r\n";
        assert_eq!(complete(malformed).accept_encoding, AcceptEncoding::IDENTITY);
        assert_eq!(
            complete(b"GET / HTTP/1.1\r\n\r\n").accept_encoding,
            AcceptEncoding::IDENTITY
        );
    }

    #[test]
    fn encodes_content_coding_headers() {
        let mut out = Vec::new();
        let extra = ["X-A: 1"];
        encode(
            &mut out,
            &Response {
                status: 200,
                content_type: CONTENT_JSON,
                headers: &extra,
                body: b"zz",
                content_encoding: Some("gzip"),
                vary_accept_encoding: true,
                close: false,
                head_only: true,
            },
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: 2\r\nContent-Encoding: gzip\r\nVary: Accept-Encoding\r\nX-A: 1\r\n\r\n"
        );
    }

    #[test]
    fn encodes_responses() {
        let mut out = Vec::new();
        let allow = ["Allow: GET"];
        encode_error(
            &mut out,
            &HttpError::new(405, -1000, "Method not allowed."),
            &allow,
            false,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: 45\r\nAllow: GET\r\n\r\n{\"code\":-1000,\"msg\":\"Method not allowed.\"}"
                .replace("45", &"{\"code\":-1000,\"msg\":\"Method not allowed.\"}".len().to_string())
        );
    }
}
