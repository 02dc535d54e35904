//! A minimal blocking HTTP/1.1 client over one keep-alive connection.
//!
//! It sends one request and reads one response at a time (no pipelining),
//! which is what a trading client waiting for its order's answer does. Only
//! `Content-Length` bodies are understood: tradsys sends nothing else.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Response head, bytes; tradsys heads are a few hundred bytes.
const RESPONSE_HEAD_BYTES_MAX: usize = 16 * 1024;
/// Response body, bytes; an account or depth answer is well below this.
const RESPONSE_BODY_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Headers per response the parser accepts.
const RESPONSE_HEADERS_COUNT_MAX: usize = 32;
/// How long a response may take before the request counts as failed.
pub const RESPONSE_TIMEOUT_MS: u64 = 5_000;

/// One response: its status and body.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A keep-alive connection to one server address.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    req: Vec<u8>,
}

impl Client {
    /// A new connection to the same server, in place of this one.
    pub fn reconnect(&mut self) -> io::Result<()> {
        let target = self.stream.peer_addr()?.to_string();
        *self = Client::connect(&target)?;
        Ok(())
    }

    pub fn connect(target: &str) -> io::Result<Client> {
        let stream = TcpStream::connect(target)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_millis(RESPONSE_TIMEOUT_MS)))?;
        stream.set_write_timeout(Some(Duration::from_millis(RESPONSE_TIMEOUT_MS)))?;
        Ok(Client {
            stream,
            buf: Vec::with_capacity(8192),
            req: Vec::with_capacity(1024),
        })
    }

    /// Sends one request and waits for its response. `headers` are
    /// (name, value) pairs; a body is sent as a form unless `content_type`
    /// says otherwise.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        content_type: &str,
    ) -> io::Result<Response> {
        self.req.clear();
        write!(self.req, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n")?;
        for (name, value) in headers {
            write!(self.req, "{name}: {value}\r\n")?;
        }
        if !body.is_empty() || method == "POST" {
            write!(
                self.req,
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                body.len()
            )?;
        }
        self.req.extend_from_slice(b"\r\n");
        self.req.extend_from_slice(body);
        self.stream.write_all(&self.req)?;
        self.read_response()
    }

    fn read_response(&mut self) -> io::Result<Response> {
        let (head_len, status, content_length) = loop {
            let mut headers = [httparse::EMPTY_HEADER; RESPONSE_HEADERS_COUNT_MAX];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let length = resp
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok())
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .ok_or_else(|| invalid("response without Content-Length"))?;
                    break (n, resp.code.unwrap_or(0), length);
                }
                Ok(httparse::Status::Partial) => {
                    if self.buf.len() > RESPONSE_HEAD_BYTES_MAX {
                        return Err(invalid("response head too large"));
                    }
                    self.fill()?;
                }
                Err(e) => return Err(invalid(&format!("bad response: {e}"))),
            }
        };
        if content_length > RESPONSE_BODY_BYTES_MAX {
            return Err(invalid("response body too large"));
        }
        while self.buf.len() < head_len + content_length {
            self.fill()?;
        }
        let body = self.buf[head_len..head_len + content_length].to_vec();
        self.buf.drain(..head_len + content_length);
        Ok(Response { status, body })
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed by the server",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}
