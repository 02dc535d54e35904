//! Entry points of the fuzz targets (`fuzz/`): each takes arbitrary bytes
//! and drives one decoder of untrusted input exactly as the server does,
//! asserting what must hold for every input. A panic here is a defect the
//! server would hit on the same bytes. The `fuzz` crate links these; the
//! unit tests below run each once on its seed corpus.

use crate::api::wsapi;
use crate::durability::image::ReplayShard;
use crate::durability::snapshot;
use crate::http::{self, HttpLimits, Params, Parsed};
use crate::journal;
use crate::marketdata::Interval;
use crate::trading::record;
use crate::ws::handshake;
use crate::ws::{Message, Reader, WsLimits};
use std::ops::ControlFlow;
use tradsys_engine::num::{parse_multiple, parse_units, units_to_string};

/// A fuzz target: takes any bytes, panics only on a defect.
pub type Target = fn(&[u8]);

/// Every target by the name of its binary in `fuzz/fuzz_targets`.
pub const TARGETS: [(&str, Target); 7] = [
    ("http_request", http_request),
    ("ws_frames", ws_frames),
    ("ws_handshake", ws_handshake),
    ("request_params", request_params),
    ("journal_segment", journal_segment),
    ("snapshot_file", snapshot_file),
    ("wsapi_request", wsapi_request),
];

/// Parameters a request may carry at most, as the default configuration.
const FUZZ_PARAMS_COUNT_MAX: usize = 64;

/// The message limit of the fuzzed WebSocket reader: small, so that the
/// fuzzer reaches it.
const FUZZ_WS_MESSAGE_BYTES_MAX: usize = 4096;

/// The markets a fuzzed snapshot is restored against: the shipped default.
const FUZZ_MARKETS: &str = include_str!("../shards/markets.toml");

/// One HTTP/1.1 request head and body, then its query and form parameters,
/// as a connection reads them.
pub fn http_request(data: &[u8]) {
    let limits = HttpLimits::default();
    let head = match http::parse(data, &limits) {
        Ok(Parsed::Complete(head)) => head,
        Ok(Parsed::Partial { needed_len: Some(head) }) => {
            assert!(head.len > data.len(), "a partial request needs more bytes than it has");
            return;
        }
        Ok(Parsed::Partial { needed_len: None }) | Err(_) => return,
    };
    assert!(head.len <= data.len() && head.body.end == head.len);
    assert!(head.body.len() <= limits.body_bytes_max);
    let form = head.form_body.then(|| &data[head.body.clone()]);
    if let Ok(params) = Params::parse(&data[head.query.clone()], form, limits.params_count_max) {
        assert!(params.len() <= limits.params_count_max);
    }
}

/// WebSocket frames from a client, read until the reader refuses them or
/// the bytes run out, as a connection's read loop does.
pub fn ws_frames(data: &[u8]) {
    let limits = WsLimits {
        message_bytes_max: FUZZ_WS_MESSAGE_BYTES_MAX,
    };
    let mut buf = data.to_vec();
    let mut reader = Reader::default();
    let mut pos = 0;
    while pos < buf.len() {
        let Ok(read) = reader.read(&mut buf[pos..], &limits) else {
            return;
        };
        let message_len = match &read.message {
            Some(Message::Text(text)) => text.len(),
            Some(Message::Binary(bytes)) => bytes.len(),
            _ => 0,
        };
        assert!(message_len <= limits.message_bytes_max);
        if read.consumed == 0 {
            return;
        }
        pos += read.consumed;
    }
}

/// An HTTP request as a WebSocket upgrade: its head, then the handshake.
pub fn ws_handshake(data: &[u8]) {
    let Ok(Parsed::Complete(head)) = http::parse(data, &HttpLimits::default()) else {
        return;
    };
    let request = head.upgrade.request(head.method, data);
    if let Ok(Some(_)) = handshake::negotiate(&request) {
        let key = request.key.unwrap_or_default();
        assert_eq!(
            handshake::accept_value(key).len(),
            28,
            "an accept value is base64 of 20 bytes"
        );
    }
}

/// A query string's parameters and every value read as a decimal, an
/// increment multiple and a kline interval, as the endpoints read them.
pub fn request_params(data: &[u8]) {
    let Ok(params) = Params::parse(data, None, FUZZ_PARAMS_COUNT_MAX) else {
        return;
    };
    for (_, value) in params.iter() {
        if let Ok(units) = parse_units(value) {
            assert!(units >= 0);
            assert_eq!(
                parse_units(&units_to_string(units)),
                Ok(units),
                "{value} does not print back"
            );
        }
        if let Ok(units) = parse_multiple(value, 1_000) {
            assert_eq!(units % 1_000, 0);
        }
        if let Ok(interval) = Interval::parse(value) {
            assert_eq!(Interval::parse(interval.as_str()), Ok(interval));
        }
    }
}

/// A journal segment as recovery reads the last one: every frame checked,
/// every record decoded.
pub fn journal_segment(data: &[u8]) {
    let mut scratch = rkyv::util::AlignedVec::<16>::new();
    let mut last_lsn = 0;
    let tail = journal::scan_segment_bytes(data, 1, |r| {
        assert!(r.lsn > last_lsn, "records come in lsn order");
        last_lsn = r.lsn;
        let _ = record::decode_with(r.payload, &mut scratch);
        ControlFlow::Continue(())
    });
    if let Ok(tail) = tail {
        assert!(tail.end_offset as usize <= data.len());
        assert!(tail.next_lsn > last_lsn, "the tail is past every record visited");
    }
}

/// A snapshot file as recovery reads it, then restored into a shard. The
/// first byte chooses whether to repair the magic and CRC first, so that the
/// archive's own validation is reached rather than only the checksum.
pub fn snapshot_file(data: &[u8]) {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let mut bytes = bytes.to_vec();
    if mode & 1 == 1 && bytes.len() >= 12 {
        bytes[..8].copy_from_slice(snapshot::MAGIC);
        let end = bytes.len() - 4;
        let crc = crc32c::crc32c(&bytes[..end]);
        bytes[end..].copy_from_slice(&crc.to_le_bytes());
    }
    let Ok((_, snap)) = snapshot::decode_file(&bytes) else {
        return;
    };
    let Ok(specs) = tradsys_engine::market::parse_markets(FUZZ_MARKETS) else {
        return;
    };
    let _ = ReplayShard::from_image(snap.image, specs);
}

/// A WebSocket API request frame: the envelope, then its parameters as the
/// REST twin reads them.
pub fn wsapi_request(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(request) = wsapi::parse(text) else {
        return;
    };
    if let Ok(translated) = wsapi::translate(&request.params, FUZZ_PARAMS_COUNT_MAX) {
        let params = Params::from_pairs(translated.pairs);
        assert!(params.len() <= FUZZ_PARAMS_COUNT_MAX);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Runs `target` on every input of its corpus in `fuzz/corpus`, as the
    /// fuzzer's first pass does; returns how many there were.
    fn replay(name: &str, target: super::Target) -> usize {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(name);
        let mut inputs = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("corpus entry").path();
            target(&std::fs::read(&path).expect("corpus input"));
            inputs += 1;
        }
        inputs
    }

    #[test]
    fn every_target_takes_its_corpus() {
        for (name, target) in super::TARGETS {
            assert!(replay(name, target) >= 1, "{name} has no corpus");
        }
    }

    /// `fuzz/Cargo.toml` and `tests/fuzz.sh` run exactly these targets.
    #[test]
    fn the_fuzz_crate_and_script_name_every_target() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let manifest = std::fs::read_to_string(root.join("fuzz/Cargo.toml")).expect("fuzz/Cargo.toml");
        let script = std::fs::read_to_string(root.join("tests/fuzz.sh")).expect("tests/fuzz.sh");
        let bins = manifest.matches("[[bin]]").count();
        assert_eq!(bins, super::TARGETS.len());
        for (name, _) in super::TARGETS {
            assert!(
                manifest.contains(&format!("name = \"{name}\"")),
                "{name} in fuzz/Cargo.toml"
            );
            assert!(root.join(format!("fuzz/fuzz_targets/{name}.rs")).exists(), "{name}.rs");
            assert!(script.contains(&format!(" {name}")), "{name} in tests/fuzz.sh");
        }
    }

    /// The seeds reach past the checks they are meant to pass: a real
    /// journal segment yields its records and a real snapshot restores.
    #[test]
    fn the_seeds_are_valid_inputs() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let segment = std::fs::read(corpus.join("journal_segment/orders-fill-cancel")).expect("segment seed");
        let mut records = 0;
        let tail = crate::journal::scan_segment_bytes(&segment, 1, |r| {
            assert!(
                crate::trading::record::decode(r.payload).is_ok(),
                "record {} decodes",
                r.lsn
            );
            records += 1;
            std::ops::ControlFlow::Continue(())
        })
        .expect("the seed segment is a valid journal");
        assert_eq!(tail.torn, None);
        assert!(
            records >= 4,
            "the seed holds the orders, the fill and the cancel: {records}"
        );

        let snapshot = std::fs::read(corpus.join("snapshot_file/raw-orders")).expect("snapshot seed");
        let decode = || {
            crate::durability::snapshot::decode_file(&snapshot[1..])
                .expect("the seed snapshot decodes")
                .1
        };
        let specs = || tradsys_engine::market::parse_markets(super::FUZZ_MARKETS).expect("default markets");
        assert!(crate::durability::image::ReplayShard::from_image(decode().image, specs()).is_ok());
        // Another shard's accounts are refused before anything asks them
        // who owns a user (a fuzzed snapshot once had "shard 0 of 0").
        let mut snap = decode();
        let (shard, shards) = (snap.image.trading.shard, snap.image.trading.shards);
        snap.image.trading.accounts = tradsys_engine::account::Accounts::new(shards, shards + 1, &specs());
        assert_eq!(
            crate::durability::image::ReplayShard::from_image(snap.image, specs()).err(),
            Some(format!(
                "snapshot of shard {shard} of {shards} holds the accounts of shard {shards} of {}",
                shards + 1
            )),
            "accounts of another shard are refused before they are asked who owns a user"
        );
        let mut flipped = snapshot[1..].to_vec();
        flipped[100] ^= 1;
        assert_eq!(
            crate::durability::snapshot::decode_file(&flipped).err().as_deref(),
            Some("checksum mismatch")
        );
    }
}
