//! WebSocket streams end to end: the upgrade, the stream API's requests,
//! trade events after crossing orders placed over REST, fan-out across
//! shards, and a slow consumer cut off while a fast one keeps every event.
//!
//! The client is written here over std's TcpStream with the crate's own
//! frame encoder; client frames are masked as RFC 6455 requires.

mod common;

use common::{Client, Response, Server, ADMIN_TOKEN};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tradsys::ws::{encode_frame, Opcode};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const WAIT: Duration = Duration::from_secs(20);

fn upgrade_request(method: &str, target: &str, key: &str, version: &str) -> String {
    format!(
        "{method} {target} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n"
    )
}

/// A blocking WebSocket client.
struct Ws {
    stream: TcpStream,
    buffered: Vec<u8>,
}

impl Ws {
    fn connect(addr: SocketAddr, target: &str) -> Ws {
        Ws::over(TcpStream::connect(addr).expect("connect"), target)
    }

    fn over(mut stream: TcpStream, target: &str) -> Ws {
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

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buffered.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    fn send(&mut self, opcode: Opcode, payload: &[u8]) {
        let mut frame = Vec::new();
        encode_frame(&mut frame, true, opcode, Some([0x37, 0xfa, 0x21, 0x3d]), payload);
        self.stream.write_all(&frame).expect("write a frame");
    }

    fn send_json(&mut self, value: Value) {
        self.send(Opcode::Text, value.to_string().as_bytes());
    }

    /// The next frame as (opcode bits, payload); `None` when the
    /// connection ended first.
    fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
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

    /// The next text message, answering pings on the way.
    fn json(&mut self) -> Value {
        loop {
            let (opcode, payload) = self.frame().expect("a frame before the connection ended");
            match opcode {
                0x1 => return serde_json::from_slice(&payload).expect("JSON text"),
                0x9 => self.send(Opcode::Pong, &payload),
                other => panic!("unexpected opcode {other:#x}: {payload:?}"),
            }
        }
    }

    /// Sends a request and returns its reply.
    fn call(&mut self, request: Value) -> Value {
        self.send_json(request);
        self.json()
    }
}

/// Parses one unmasked server frame from the start of `buf`.
fn parse_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
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

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as u64
}

fn request(addr: SocketAddr, method: &str, target: &str, headers: &str, body: &str) -> Response {
    let mut c = Client::connect(addr);
    c.send(&format!(
        "{method} {target} HTTP/1.1\r\nHost: t\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    c.response()
}

fn admin(server: &Server, method: &str, path: &str, body: Value) -> Value {
    let addr = server.admin.expect("admin API");
    let response = request(
        addr,
        method,
        path,
        &format!("X-Admin-Token: {ADMIN_TOKEN}\r\n"),
        &body.to_string(),
    );
    assert_eq!(response.status, 200, "admin {method} {path}: {}", response.body_text());
    response.json()
}

/// A user with an API key and deposits, as (api key, secret).
fn user(server: &Server, name: &str) -> (String, String) {
    let id = admin(server, "POST", "/admin/v1/users", json!({ "name": name }))["userId"]
        .as_u64()
        .expect("userId");
    let key = admin(
        server,
        "POST",
        &format!("/admin/v1/users/{id}/keys"),
        json!({ "scopes": ["READ", "TRADE", "USER_STREAM"] }),
    );
    for (asset, amount) in [("BTC", "10"), ("USDT", "1000000")] {
        admin(
            server,
            "POST",
            &format!("/admin/v1/users/{id}/deposits"),
            json!({ "asset": asset, "amount": amount }),
        );
    }
    (
        key["apiKey"].as_str().expect("apiKey").to_string(),
        key["secretKey"].as_str().expect("secretKey").to_string(),
    )
}

/// A signed REST order on one keep-alive connection.
fn order(c: &mut Client, who: &(String, String), side: &str, qty: &str, price: &str) -> Value {
    let query = format!(
        "symbol=BTCUSDT&side={side}&type=LIMIT&timeInForce=GTC&quantity={qty}&price={price}\
         &newOrderRespType=FULL&timestamp={}",
        now_ms()
    );
    let signature = tradsys::auth::sign(who.1.as_bytes(), query.as_bytes());
    c.send(&format!(
        "POST /api/v3/order?{query}&signature={signature} HTTP/1.1\r\nHost: t\r\nX-MBX-APIKEY: {}\r\n\r\n",
        who.0
    ));
    let response = c.response();
    assert_eq!(response.status, 200, "order: {}", response.body_text());
    response.json()
}

fn metric(server: &Server, name: &str) -> Vec<f64> {
    let text = server.get("/metrics").body_text();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

#[test]
fn upgrade_errors_are_http_answers() {
    let server = Server::start(1, &[]);
    let cases = [
        (upgrade_request("GET", "/ws", "short", "13"), 400),
        (upgrade_request("GET", "/ws", KEY, "8"), 400),
        (upgrade_request("POST", "/ws", KEY, "13"), 405),
        (upgrade_request("GET", "/nowhere", KEY, "13"), 404),
        (upgrade_request("GET", "/ws/btcusdt@nothing", KEY, "13"), 400),
        (upgrade_request("GET", "/ws/nosuchcoin@trade", KEY, "13"), 400),
    ];
    for (raw, status) in cases {
        let mut c = server.connect();
        c.send(&raw);
        let response = c.response();
        assert_eq!(response.status, status, "{raw:?}: {}", response.body_text());
        let (code, _) = response.error();
        assert!(code < 0, "a Binance error code: {code}");
        // A refused upgrade leaves an ordinary keep-alive HTTP connection.
        c.send("GET /api/v3/ping HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(c.response().status, 200);
    }
    let mut c = server.connect();
    c.send(&upgrade_request("GET", "/ws", KEY, "8"));
    assert_eq!(c.response().header("Sec-WebSocket-Version"), Some("13"));
}

#[test]
fn stream_requests_get_binance_replies() {
    let server = Server::start(1, &[]);
    let mut ws = Ws::connect(server.addr, "/ws");
    let subscribe = json!({"method": "SUBSCRIBE", "params": ["btcusdt@trade", "btcusdt@depth"], "id": 1});
    assert_eq!(ws.call(subscribe), json!({"result": null, "id": 1}));
    assert_eq!(
        ws.call(json!({"method": "LIST_SUBSCRIPTIONS", "id": 2})),
        json!({"result": ["btcusdt@trade", "btcusdt@depth"], "id": 2})
    );
    assert_eq!(
        ws.call(json!({"method": "UNSUBSCRIBE", "params": ["btcusdt@depth"], "id": 3})),
        json!({"result": null, "id": 3})
    );
    assert_eq!(
        ws.call(json!({"method": "LIST_SUBSCRIPTIONS", "id": 4})),
        json!({"result": ["btcusdt@trade"], "id": 4})
    );
    // Binance allows 5 messages a second; stay under it.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        ws.call(json!({"method": "GET_PROPERTY", "params": ["combined"], "id": 5})),
        json!({"result": false, "id": 5})
    );
    assert_eq!(
        ws.call(json!({"method": "SET_PROPERTY", "params": ["combined", true], "id": 6})),
        json!({"result": null, "id": 6})
    );
    assert_eq!(
        ws.call(json!({"method": "SET_PROPERTY", "params": ["combined", 1], "id": 7}))["error"]["code"],
        json!(1)
    );
    assert_eq!(
        ws.call(json!({"method": "GET_PROPERTY", "params": ["nothing"], "id": 8}))["error"]["code"],
        json!(0)
    );
    assert_eq!(ws.call(json!({"method": "NOPE", "id": 9}))["error"]["code"], json!(2));
    std::thread::sleep(Duration::from_millis(1100));
    ws.send(Opcode::Text, b"{not json");
    assert_eq!(ws.json()["error"]["code"], json!(3));
    ws.send(Opcode::Ping, b"hi");
    assert_eq!(ws.frame(), Some((0xA, b"hi".to_vec())));
    ws.send(Opcode::Close, &1000u16.to_be_bytes());
    let (opcode, payload) = ws.frame().expect("the close echo");
    assert_eq!((opcode, payload), (0x8, 1000u16.to_be_bytes().to_vec()));
}

#[test]
fn more_than_five_messages_a_second_close_with_1008() {
    let server = Server::start(1, &[]);
    let mut ws = Ws::connect(server.addr, "/ws");
    for id in 0..6 {
        ws.send_json(json!({"method": "LIST_SUBSCRIPTIONS", "id": id}));
    }
    let mut replies = 0;
    let close = loop {
        match ws.frame().expect("a frame") {
            (0x1, _) => replies += 1,
            (0x8, payload) => break payload,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(replies, 5);
    assert_eq!(close[..2], 1008u16.to_be_bytes());
}

/// Connections to `target` until every shard holds at least one.
fn on_every_shard(server: &Server, shards: usize, target: &str) -> Vec<Ws> {
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

#[test]
fn trade_events_reach_subscribers_on_every_shard() {
    let server = Server::start(2, &["--admin-token", ADMIN_TOKEN]);
    let mut conns = on_every_shard(&server, 2, "/ws/btcusdt@trade");
    let mut combined = Ws::connect(server.addr, "/stream?streams=btcusdt@trade/btcusdt@bookTicker");
    let (maker, taker) = (user(&server, "maker"), user(&server, "taker"));
    let mut rest = server.connect();
    order(&mut rest, &maker, "SELL", "0.00100", "30000.00");
    let placed = order(&mut rest, &taker, "BUY", "0.00100", "30000.00");
    let fill = &placed["fills"][0];
    let trade_id = fill["tradeId"].as_u64().expect("tradeId");
    let time = placed["transactTime"].as_u64().expect("transactTime");
    let expected = json!({
        "e": "trade", "E": time, "s": "BTCUSDT", "t": trade_id,
        "p": "30000.00000000", "q": "0.00100000", "T": time, "m": false, "M": true,
    });
    for ws in &mut conns {
        assert_eq!(ws.json(), expected);
    }
    // The maker's order makes the best ask; the trade takes it away.
    let ask = combined.json();
    assert_eq!(ask["stream"], "btcusdt@bookTicker");
    let u = ask["data"]["u"].as_u64().expect("u");
    let ask_data = json!({"u": u, "s": "BTCUSDT", "b": "0.00000000", "B": "0.00000000",
        "a": "30000.00000000", "A": "0.00100000"});
    assert_eq!(ask["data"], ask_data);
    assert_eq!(combined.json(), json!({"stream": "btcusdt@trade", "data": expected}));
    let empty = combined.json();
    assert_eq!(empty["stream"], "btcusdt@bookTicker");
    assert!(empty["data"]["u"].as_u64().expect("u") > u);
    assert_eq!(empty["data"]["a"], "0.00000000");
}

#[test]
fn slow_consumer_is_cut_off_while_a_fast_one_gets_every_event() {
    let server = Server::start(
        1,
        &[
            "--admin-token",
            ADMIN_TOKEN,
            "--ws-outbound-bytes-max",
            "65536",
            "--ws-socket-send-bytes",
            "4096",
            "--orders-per-10s-max",
            "100000",
        ],
    );
    let slow_socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    slow_socket.set_recv_buffer_size(2048).expect("SO_RCVBUF");
    slow_socket.connect(&server.addr.into()).expect("connect");
    let mut slow = Ws::over(slow_socket.into(), "/ws/btcusdt@trade");
    let mut fast = Ws::connect(server.addr, "/ws/btcusdt@trade");
    let makers = [user(&server, "maker-a"), user(&server, "maker-b")];
    let taker = user(&server, "taker");
    let mut rest = server.connect();
    // One round is one burst of 300 trades (about 45 KB of frames), which
    // fits the fast consumer's 64 KiB queue; the slow one falls further
    // behind with every round.
    const PER_MAKER: usize = 150;
    const ROUNDS: usize = 4;
    for round in 0..ROUNDS {
        for maker in &makers {
            for _ in 0..PER_MAKER {
                order(&mut rest, maker, "SELL", "0.00100", "30000.00");
            }
        }
        let placed = order(&mut rest, &taker, "BUY", "0.30000", "30000.00");
        let fills = placed["fills"].as_array().expect("fills");
        assert_eq!(fills.len(), 2 * PER_MAKER);
        let first = fills[0]["tradeId"].as_u64().expect("tradeId");
        for i in 0..fills.len() {
            assert_eq!(
                fast.json()["t"],
                json!(first + i as u64),
                "round {round}, trade {i} in order"
            );
        }
    }
    let cut_off = common::eventually(WAIT, || {
        metric(&server, "tradsys_ws_slow_consumers_closed_total")
            .iter()
            .sum::<f64>()
            >= 1.0
    });
    assert!(cut_off, "the slow consumer was never cut off");
    let close = loop {
        match slow.frame().expect("frames, then a close frame") {
            (0x1, _) => {}
            (0x8, payload) => break payload,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(close[..2], 1008u16.to_be_bytes());
    // The fast consumer is still served.
    assert_eq!(
        fast.call(json!({"method": "LIST_SUBSCRIPTIONS", "id": 1})),
        json!({"result": ["btcusdt@trade"], "id": 1})
    );
}

/// A book side as price → quantity, both as Binance prints them.
type Side = std::collections::BTreeMap<String, String>;

fn side_of(levels: &Value) -> Side {
    levels
        .as_array()
        .expect("levels")
        .iter()
        .map(|l| (l[0].as_str().expect("price").into(), l[1].as_str().expect("qty").into()))
        .collect()
}

fn apply(side: &mut Side, levels: &Value) {
    for (price, qty) in side_of(levels) {
        if qty == "0.00000000" {
            side.remove(&price);
        } else {
            side.insert(price, qty);
        }
    }
}

fn depth_snapshot(server: &Server) -> (u64, Side, Side) {
    let response = server.get("/api/v3/depth?symbol=BTCUSDT&limit=5000");
    assert_eq!(response.status, 200);
    let body = response.json();
    let id = body["lastUpdateId"].as_u64().expect("lastUpdateId");
    (id, side_of(&body["bids"]), side_of(&body["asks"]))
}

/// Binance's procedure for a local order book: buffer the diffs, take a
/// REST snapshot, drop diffs it already covers, apply the rest in order.
#[test]
fn local_book_from_depth_diffs_equals_rest_depth() {
    let server = Server::start(2, &["--admin-token", ADMIN_TOKEN]);
    let mut ws = Ws::connect(server.addr, "/ws/btcusdt@depth@100ms");
    let traders = [user(&server, "a"), user(&server, "b")];
    let mut rest = server.connect();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut place = |count: usize, rest: &mut Client| {
        for _ in 0..count {
            let who = &traders[random(2) as usize];
            let side = if random(2) == 0 { "BUY" } else { "SELL" };
            let price = format!("{}.00", 29_990 + random(21));
            let qty = format!("0.00{}00", 1 + random(5));
            order(rest, who, side, &qty, &price);
        }
    };
    place(20, &mut rest);
    let (first_id, mut bids, mut asks) = depth_snapshot(&server);
    // Several batches, each waited for, so that the book is rebuilt from
    // a chain of diffs rather than one.
    let mut events = Vec::new();
    let (mut last_id, mut final_bids, mut final_asks) = (first_id, Side::new(), Side::new());
    for _ in 0..4 {
        place(20, &mut rest);
        (last_id, final_bids, final_asks) = depth_snapshot(&server);
        while events.last().map_or(0, |e: &Value| e["u"].as_u64().expect("u")) < last_id {
            events.push(ws.json());
        }
    }
    assert!(last_id > first_id, "the orders changed the book");
    assert!(events.len() >= 4, "one diff per batch at least: {}", events.len());
    let mut previous_u: Option<u64> = None;
    let mut applied = 0;
    for event in &events {
        assert_eq!(event["e"], "depthUpdate");
        assert_eq!(event["s"], "BTCUSDT");
        let (first, last) = (event["U"].as_u64().expect("U"), event["u"].as_u64().expect("u"));
        if let Some(previous) = previous_u {
            assert_eq!(first, previous + 1, "diffs form one chain");
        }
        previous_u = Some(last);
        if last <= first_id {
            continue;
        }
        if applied == 0 {
            assert!(first <= first_id + 1, "the first diff applied covers the snapshot");
        }
        apply(&mut bids, &event["b"]);
        apply(&mut asks, &event["a"]);
        applied += 1;
    }
    assert_eq!(previous_u, Some(last_id), "no change after the last snapshot");
    assert_eq!(bids, final_bids);
    assert_eq!(asks, final_asks);
}

fn listen_key(server: &Server, who: &(String, String)) -> String {
    let response = request(
        server.addr,
        "POST",
        "/api/v3/userDataStream",
        &format!("X-MBX-APIKEY: {}\r\n", who.0),
        "",
    );
    assert_eq!(response.status, 200, "{}", response.body_text());
    response.json()["listenKey"].as_str().expect("listenKey").to_string()
}

#[test]
fn user_data_stream_reports_executions_and_balances() {
    let server = Server::start(2, &["--admin-token", ADMIN_TOKEN]);
    let (maker, taker) = (user(&server, "maker"), user(&server, "taker"));
    let mut c = server.connect();
    c.send(&upgrade_request("GET", "/ws/000000000999nosuchkey", KEY, "13"));
    assert_eq!(
        c.response().error(),
        (-1125, "This listenKey does not exist.".to_string())
    );
    let key = listen_key(&server, &taker);
    // Several connections (the per-user cap is 3), so that the user's
    // events cross shards.
    let mut conns: Vec<Ws> = (0..3)
        .map(|_| Ws::connect(server.addr, &format!("/ws/{key}")))
        .collect();
    let mut rest = server.connect();
    order(&mut rest, &maker, "SELL", "0.00100", "30000.00");
    let placed = order(&mut rest, &taker, "BUY", "0.00100", "30000.00");
    let fill = &placed["fills"][0];
    for ws in &mut conns {
        let report = loop {
            let message = ws.json();
            if message["e"] == "executionReport" && message["x"] == "TRADE" {
                break message;
            }
        };
        let time = placed["transactTime"].as_u64().expect("transactTime");
        let expected = json!({
            "e": "executionReport", "E": report["E"], "s": "BTCUSDT",
            "c": placed["clientOrderId"], "S": "BUY", "o": "LIMIT", "f": "GTC",
            "q": "0.00100000", "p": "30000.00000000", "P": "0.00000000", "F": "0.00000000",
            "g": -1, "C": "", "x": "TRADE", "X": "FILLED", "r": "NONE", "i": placed["orderId"],
            "l": "0.00100000", "z": "0.00100000", "L": "30000.00000000", "n": fill["commission"],
            "N": fill["commissionAsset"], "T": time, "t": fill["tradeId"], "I": placed["orderId"],
            "w": false, "m": false, "M": false, "O": time, "Z": "30.00000000", "Y": "30.00000000",
            "Q": "0.00000000", "W": time, "V": "NONE",
        });
        assert_eq!(report, expected);
        let position = ws.json();
        assert_eq!(position["e"], "outboundAccountPosition");
        let balances = position["B"].as_array().expect("B");
        assert_eq!(balances[0]["a"], "BTC");
        assert_eq!(balances[1]["a"], "USDT");
        assert_eq!(balances[1]["f"], "999970.00000000");
    }
}
