//! A blocking WebSocket client for the integration tests, over std's
//! TcpStream with the crate's own frame encoder; client frames are masked
//! as RFC 6455 requires.

use super::Server;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tradsys::ws::{encode_frame, Opcode};

pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
pub const WAIT: Duration = Duration::from_secs(20);

pub fn upgrade_request(method: &str, target: &str, key: &str, version: &str) -> String {
    format!(
        "{method} {target} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n"
    )
}

/// A blocking WebSocket client.
pub struct Ws {
    pub stream: TcpStream,
    buffered: Vec<u8>,
}

impl Ws {
    pub fn connect(addr: SocketAddr, target: &str) -> Ws {
        Ws::over(TcpStream::connect(addr).expect("connect"), target)
    }

    pub fn over(mut stream: TcpStream, target: &str) -> Ws {
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        stream
            .write_all(upgrade_request("GET", target, KEY, "13").as_bytes())
            .expect("write");
        let mut ws = Ws {
            stream,
            buffered: Vec::new(),
        };
        let head_end = loop {
            if let Some(end) = ws.buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            assert!(ws.fill(), "the server closed during the handshake");
        };
        let head = String::from_utf8(ws.buffered[..head_end].to_vec()).expect("ascii");
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        assert!(head.contains(&format!("Sec-WebSocket-Accept: {ACCEPT}\r\n")), "{head}");
        ws.buffered.drain(..head_end);
        ws
    }

    pub fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buffered.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    pub fn send(&mut self, opcode: Opcode, payload: &[u8]) {
        let mut frame = Vec::new();
        encode_frame(&mut frame, true, opcode, Some([0x37, 0xfa, 0x21, 0x3d]), payload);
        self.stream.write_all(&frame).expect("write a frame");
    }

    /// Sends text messages in one write, as a client that pipelines does.
    pub fn send_all(&mut self, messages: &[String]) {
        let mut frames = Vec::new();
        for message in messages {
            encode_frame(
                &mut frames,
                true,
                Opcode::Text,
                Some([0x37, 0xfa, 0x21, 0x3d]),
                message.as_bytes(),
            );
        }
        self.stream.write_all(&frames).expect("write frames");
    }

    pub fn send_json(&mut self, value: Value) {
        self.send(Opcode::Text, value.to_string().as_bytes());
    }

    /// The next frame as (opcode bits, payload); `None` when the
    /// connection ended first.
    pub fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some((opcode, payload, len)) = parse_frame(&self.buffered) {
                self.buffered.drain(..len);
                return Some((opcode, payload));
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// Runs `act` (say, a trade) until a text message comes within 200 ms
    /// of it, at most `tries` times: for a subscription that takes a
    /// moment to be in place (through another instance). The message, or
    /// `None`; reads wait `WAIT` again afterwards.
    pub fn first_text_after(&mut self, tries: usize, mut act: impl FnMut()) -> Option<Vec<u8>> {
        self.stream
            .set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .expect("a read timeout");
        let mut found = None;
        for _ in 0..tries {
            act();
            if let Some((0x1, payload)) = self.frame() {
                found = Some(payload);
                break;
            }
        }
        self.stream.set_read_timeout(Some(WAIT)).expect("a read timeout");
        found
    }

    /// The next text message, answering pings on the way.
    /// Panics after `WAIT` without one: the server's pings alone would
    /// keep a read timeout from ever firing.
    pub fn json(&mut self) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "no message within {WAIT:?}");
            let (opcode, payload) = self.frame().expect("a frame before the connection ended");
            match opcode {
                0x1 => return serde_json::from_slice(&payload).expect("JSON text"),
                0x9 => self.send(Opcode::Pong, &payload),
                other => panic!("unexpected opcode {other:#x}: {payload:?}"),
            }
        }
    }

    /// Sends a request and returns its reply.
    pub fn call(&mut self, request: Value) -> Value {
        self.send_json(request);
        self.json()
    }
}

/// Parses one unmasked server frame from the start of `buf`.
pub fn parse_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[0] & 0xf0, 0x80, "server frames are final and use no extension");
    assert_eq!(buf[1] & 0x80, 0, "server frames are not masked");
    let (len, start) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().ok()?) as usize, 10),
        126 | 127 => return None,
        n => (usize::from(n), 2),
    };
    if buf.len() < start + len {
        return None;
    }
    Some((buf[0] & 0x0f, buf[start..start + len].to_vec(), start + len))
}

/// The values of metric `name` over its label sets, from /metrics.
pub fn metric(server: &Server, name: &str) -> Vec<f64> {
    let text = server.get("/metrics").body_text();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

/// Connects to `target` until every shard holds at least one of the
/// connections (SO_REUSEPORT decides where each lands).
pub fn on_every_shard(server: &Server, shards: usize, target: &str) -> Vec<Ws> {
    let mut conns = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        conns.push(Ws::connect(server.addr, target));
        let open = metric(server, "tradsys_ws_connections_open");
        if open.len() == shards && open.iter().all(|&n| n > 0.0) {
            return conns;
        }
        assert!(
            Instant::now() < deadline,
            "connections never reached every shard: {open:?}"
        );
    }
}

/// The executionReport Binance sends for `placed`, a LIMIT GTC BUY of
/// 0.001 BTCUSDT at 30000 that filled on arrival against one maker; `report`
/// gives the event time.
pub fn filled_buy_report(report: &Value, placed: &Value) -> Value {
    let fill = &placed["fills"][0];
    let time = placed["transactTime"].as_u64().expect("transactTime");
    serde_json::json!({
        "e": "executionReport", "E": report["E"], "s": "BTCUSDT",
        "c": placed["clientOrderId"], "S": "BUY", "o": "LIMIT", "f": "GTC",
        "q": "0.00100000", "p": "30000.00000000", "P": "0.00000000", "F": "0.00000000",
        "g": -1, "C": "", "x": "TRADE", "X": "FILLED", "r": "NONE", "i": placed["orderId"],
        "l": "0.00100000", "z": "0.00100000", "L": "30000.00000000", "n": fill["commission"],
        "N": fill["commissionAsset"], "T": time, "t": fill["tradeId"], "I": placed["orderId"],
        "w": false, "m": false, "M": false, "O": time, "Z": "30.00000000", "Y": "30.00000000",
        "Q": "0.00000000", "W": time, "V": "NONE",
    })
}
