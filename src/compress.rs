//! Response compression: whether a rendered body goes out gzipped, and the
//! CPU a shard may spend on it.
//!
//! A body is gzipped when it is at least `bytes_min` long, the request's
//! `Accept-Encoding` prefers gzip, the shard's budget of input bytes per
//! second still covers it, and the result is smaller by more than the
//! headers it adds. Below `bytes_min` a body fits in one 1448-byte TCP
//! segment with its head (about 140 bytes), so compressing it would save
//! no packet and cost about what the whole request costs
//! (docs/performance.md, "Response compression").
//!
//! Compressing runs on the shard that answers, inside the executor, so the
//! budget is what keeps it from crowding out order entry: a token bucket of
//! input bytes refilled at `input_bytes_per_second_max` and holding
//! `COMPRESS_BURST_MS` of it. When it is empty a response goes out as is —
//! still correct, only larger — and the caller counts it.
//!
//! libdeflate compresses a whole buffer in one call, which is what a
//! rendered body is, and was the fastest DEFLATE at level 1 with the best
//! ratio of the fast settings measured (flate2's miniz_oxide and brotli
//! were slower for the same size or larger for the same time). One
//! `Compressor` per shard keeps its libdeflate state and output buffer.
//!
//! No I/O and no clock: the caller passes the time in.

use crate::http::AcceptEncoding;
use std::time::Instant;

/// libdeflate's levels: 1 is the fastest, 12 the smallest output.
pub const COMPRESS_LEVEL_MIN: u8 = 1;
pub const COMPRESS_LEVEL_MAX: u8 = 12;
/// How much of a second's budget the bucket holds: a burst of large
/// responses may take this much at once, then waits for the refill.
pub const COMPRESS_BURST_MS: u64 = 100;
/// Bytes `Content-Encoding: gzip` adds to a head (`Vary` is sent either
/// way); gzip must save more than this to be sent.
pub const CODING_HEADERS_BYTES: usize = "\r\nContent-Encoding: gzip".len();
/// An output buffer larger than this is freed at the next call, so that
/// one huge answer does not pin its memory for the shard's life.
pub const COMPRESS_BUFFER_BYTES_KEPT_MAX: usize = 1 << 20;

/// The defaults, chosen by `benches/compress.rs` (docs/performance.md).
pub const COMPRESS_BYTES_MIN_DEFAULT: usize = 1300;
pub const COMPRESS_INPUT_BYTES_PER_SECOND_MAX_DEFAULT: u64 = 16 << 20;
pub const COMPRESS_LEVEL_DEFAULT: u8 = 1;

const _: () = assert!(COMPRESS_LEVEL_MIN <= COMPRESS_LEVEL_DEFAULT && COMPRESS_LEVEL_DEFAULT <= COMPRESS_LEVEL_MAX);
// A body the threshold lets through must fit in a full bucket, or it could
// never be compressed.
const _: () = assert!(COMPRESS_BYTES_MIN_DEFAULT as u64 <= burst_bytes(COMPRESS_INPUT_BYTES_PER_SECOND_MAX_DEFAULT));
const _: () = assert!(CODING_HEADERS_BYTES < COMPRESS_BYTES_MIN_DEFAULT);

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// The bucket's size for a rate: `COMPRESS_BURST_MS` of it.
pub const fn burst_bytes(input_bytes_per_second_max: u64) -> u64 {
    input_bytes_per_second_max / 1000 * COMPRESS_BURST_MS + input_bytes_per_second_max % 1000 * COMPRESS_BURST_MS / 1000
}

/// The compression settings, each named with its unit last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompressConfig {
    /// Bodies shorter than this are never compressed.
    pub bytes_min: usize,
    /// Body bytes a shard may compress per second; 0 turns compression off.
    pub input_bytes_per_second_max: u64,
    /// libdeflate's level, `COMPRESS_LEVEL_MIN..=COMPRESS_LEVEL_MAX`.
    pub level: u8,
}

impl Default for CompressConfig {
    fn default() -> CompressConfig {
        CompressConfig {
            bytes_min: COMPRESS_BYTES_MIN_DEFAULT,
            input_bytes_per_second_max: COMPRESS_INPUT_BYTES_PER_SECOND_MAX_DEFAULT,
            level: COMPRESS_LEVEL_DEFAULT,
        }
    }
}

/// A token bucket of input bytes. Tokens are kept in byte-nanoseconds per
/// second (a byte is 10⁹ of them), so that refills at any call rate add up
/// exactly and no fraction of a byte is ever lost.
#[derive(Debug)]
pub struct Budget {
    per_second: u64,
    capacity: u128,
    tokens: u128,
    refilled: Option<Instant>,
}

impl Budget {
    /// A full bucket for `per_second` bytes a second.
    pub fn new(per_second: u64) -> Budget {
        let capacity = u128::from(burst_bytes(per_second)) * NANOS_PER_SECOND;
        Budget {
            per_second,
            capacity,
            tokens: capacity,
            refilled: None,
        }
    }

    /// Takes `bytes` from the bucket if it holds that many; else takes
    /// nothing.
    pub fn take(&mut self, bytes: usize, now: Instant) -> bool {
        self.refill(now);
        let cost = bytes as u128 * NANOS_PER_SECOND;
        if cost > self.tokens {
            return false;
        }
        self.tokens -= cost;
        true
    }

    /// Whole bytes left in the bucket (as of the last call).
    pub fn bytes_left(&self) -> u64 {
        (self.tokens / NANOS_PER_SECOND) as u64
    }

    fn refill(&mut self, now: Instant) {
        if let Some(before) = self.refilled {
            // A time before the last one (callers read the clock at
            // different points) refills nothing and is not kept.
            let Some(elapsed) = now.checked_duration_since(before) else {
                return;
            };
            let added = elapsed.as_nanos() * u128::from(self.per_second);
            self.tokens = (self.tokens + added).min(self.capacity);
        }
        self.refilled = Some(now);
    }
}

/// What became of one body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Shorter than `bytes_min` (or compression is off): no other
    /// `Accept-Encoding` would have changed it.
    Small,
    /// The client did not ask for gzip, or preferred no coding.
    NotAccepted,
    /// The shard's budget was spent: sent as is.
    OverBudget,
    /// gzip would not have saved more than the headers it adds.
    Incompressible,
    /// Sent gzipped.
    Gzip { input_bytes: usize, output_bytes: usize },
}

impl Outcome {
    /// Whether the response depends on `Accept-Encoding` (`Vary`).
    pub fn varies(self) -> bool {
        self != Outcome::Small
    }
}

/// One shard's compressor: libdeflate's state, the budget, and the buffer
/// the last compressed body is in.
pub struct Compressor {
    config: CompressConfig,
    gzip: libdeflater::Compressor,
    budget: Budget,
    out: Vec<u8>,
}

impl Compressor {
    pub fn new(config: CompressConfig) -> Compressor {
        let level = libdeflater::CompressionLvl::new(i32::from(config.level)).unwrap_or_default();
        Compressor {
            config,
            gzip: libdeflater::Compressor::new(level),
            budget: Budget::new(config.input_bytes_per_second_max),
            out: Vec::new(),
        }
    }

    /// Decides how `body` goes out to a client that sent `accept`, and
    /// compresses it if so. Returns the outcome and the bytes to send:
    /// `body` itself, or the gzipped body (valid until the next call).
    pub fn encode<'a>(&'a mut self, body: &'a [u8], accept: AcceptEncoding, now: Instant) -> (Outcome, &'a [u8]) {
        if body.len() < self.config.bytes_min || self.config.input_bytes_per_second_max == 0 {
            return (Outcome::Small, body);
        }
        if !accept.prefers_gzip() {
            return (Outcome::NotAccepted, body);
        }
        if !self.budget.take(body.len(), now) {
            return (Outcome::OverBudget, body);
        }
        // Room for exactly what would be worth sending: libdeflate stops
        // with an error when the output does not fit.
        let room = body.len().saturating_sub(CODING_HEADERS_BYTES + 1);
        if room == 0 {
            return (Outcome::Incompressible, body);
        }
        if self.out.len() > COMPRESS_BUFFER_BYTES_KEPT_MAX.max(room) {
            // The last body was a huge one and has been sent by now.
            self.out = Vec::new();
        }
        if self.out.len() < room {
            self.out.resize(room, 0);
        }
        match self.gzip.gzip_compress(body, &mut self.out[..room]) {
            Ok(n) => (gzipped(body.len(), n), &self.out[..n]),
            Err(_) => (Outcome::Incompressible, body),
        }
    }

    /// The budget, for tests and metrics.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }
}

fn gzipped(input_bytes: usize, output_bytes: usize) -> Outcome {
    Outcome::Gzip {
        input_bytes,
        output_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::time::Duration;

    const GZIP: AcceptEncoding = AcceptEncoding {
        gzip_q: 1000,
        identity_q: None,
    };

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data).read_to_end(&mut out).unwrap();
        out
    }

    /// A JSON-like body of exactly `len` bytes that compresses well.
    fn body(len: usize) -> Vec<u8> {
        let row = b"[\"30000.01000000\",\"0.25000000\"],";
        row.iter().cycle().take(len).copied().collect()
    }

    fn config(bytes_min: usize, per_second: u64) -> CompressConfig {
        CompressConfig {
            bytes_min,
            input_bytes_per_second_max: per_second,
            level: 1,
        }
    }

    #[test]
    fn the_defaults_fit_together() {
        assert_eq!(burst_bytes(COMPRESS_INPUT_BYTES_PER_SECOND_MAX_DEFAULT), 1_677_721);
        assert_eq!(burst_bytes(999), 99);
        assert_eq!(burst_bytes(1000), 100);
        assert_eq!(CODING_HEADERS_BYTES, 24);
    }

    #[test]
    fn bodies_below_the_threshold_never_vary() {
        let mut c = Compressor::new(config(1300, 1 << 20));
        let now = Instant::now();
        let table: &[(usize, AcceptEncoding, bool, bool)] = &[
            // (body bytes, accept, gzipped, varies)
            (0, GZIP, false, false),
            (1299, GZIP, false, false),
            (1300, GZIP, true, true),
            (1300, AcceptEncoding::IDENTITY, false, true),
            (100_000, GZIP, true, true),
        ];
        for (len, accept, gzipped, varies) in table {
            let b = body(*len);
            let (outcome, sent) = c.encode(&b, *accept, now);
            assert_eq!(
                (matches!(outcome, Outcome::Gzip { .. }), outcome.varies()),
                (*gzipped, *varies),
                "{len} {accept:?}"
            );
            if *gzipped {
                let sent = sent.to_vec();
                assert!(sent.len() < len - CODING_HEADERS_BYTES, "{len}");
                assert_eq!(gunzip(&sent), b, "{len}");
                assert_eq!(
                    outcome,
                    Outcome::Gzip {
                        input_bytes: *len,
                        output_bytes: sent.len()
                    }
                );
            } else {
                assert_eq!(sent, &b[..], "{len}");
            }
        }
    }

    #[test]
    fn a_rate_of_zero_turns_compression_off() {
        let mut c = Compressor::new(config(1, 0));
        assert_eq!(c.encode(&body(5000), GZIP, Instant::now()).0, Outcome::Small);
    }

    #[test]
    fn bodies_too_short_to_save_their_header_are_not_tried() {
        let mut c = Compressor::new(config(1, 1 << 20));
        let b = body(CODING_HEADERS_BYTES + 1);
        assert_eq!(c.encode(&b, GZIP, Instant::now()), (Outcome::Incompressible, &b[..]));
    }

    #[test]
    fn incompressible_bodies_go_as_they_are() {
        let mut c = Compressor::new(config(64, 1 << 20));
        // Bytes of a xorshift sequence: nothing for DEFLATE to find.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let now = Instant::now();
        assert_eq!(c.encode(&noise, GZIP, now), (Outcome::Incompressible, &noise[..]));
        // The attempt was paid for.
        assert_eq!(c.budget().bytes_left(), burst_bytes(1 << 20) - 4096);
    }

    #[test]
    fn large_bodies_do_not_keep_their_buffer() {
        let mut c = Compressor::new(config(64, 1 << 30));
        let big = body(COMPRESS_BUFFER_BYTES_KEPT_MAX * 2);
        let (outcome, sent) = c.encode(&big, GZIP, Instant::now());
        let sent = sent.to_vec();
        assert!(matches!(outcome, Outcome::Gzip { .. }));
        assert_eq!(gunzip(&sent), big);
        let small = body(5000);
        let (_, sent) = c.encode(&small, GZIP, Instant::now());
        let sent = sent.to_vec();
        assert_eq!(gunzip(&sent), small);
        assert_eq!(c.out.len(), 5000 - CODING_HEADERS_BYTES - 1);
    }

    #[test]
    fn the_bucket_refills_at_its_rate_up_to_its_burst() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // 10,000 bytes a second: the bucket holds 1,000.
        let mut b = Budget::new(10_000);
        assert_eq!(b.bytes_left(), 1000);
        let steps: &[(u64, usize, bool, u64)] = &[
            // (ms, bytes asked, granted, bytes left after)
            (0, 600, true, 400),
            (0, 401, false, 400),
            (0, 400, true, 0),
            (10, 101, false, 100),
            (10, 100, true, 0),
            // A long pause refills only up to the burst.
            (5_000, 1001, false, 1000),
            (5_000, 1000, true, 0),
            // A time before the last refills nothing.
            (4_000, 1, false, 0),
            (5_001, 10, true, 0),
        ];
        for (ms, bytes, granted, left) in steps {
            assert_eq!(b.take(*bytes, at(*ms)), *granted, "at {ms} ms, {bytes} bytes");
            assert_eq!(b.bytes_left(), *left, "at {ms} ms");
        }
    }

    #[test]
    fn refills_in_tiny_steps_lose_nothing() {
        let t0 = Instant::now();
        // 1,000 bytes a second is one byte a millisecond; asked every
        // 100 µs, ten steps make one byte.
        let mut b = Budget::new(1000);
        assert!(b.take(100, t0));
        for step in 1..=10 {
            assert!(!b.take(1, t0 + Duration::from_micros(100 * step) - Duration::from_nanos(1)));
        }
        assert!(b.take(1, t0 + Duration::from_millis(1)));
        assert_eq!(b.bytes_left(), 0);
    }

    #[test]
    fn over_budget_bodies_go_as_they_are() {
        let t0 = Instant::now();
        // 40,000 bytes a second: 4,000 in the bucket.
        let mut c = Compressor::new(config(1000, 40_000));
        let b = body(3000);
        assert!(matches!(c.encode(&b, GZIP, t0).0, Outcome::Gzip { .. }));
        assert_eq!(c.encode(&b, GZIP, t0), (Outcome::OverBudget, &b[..]));
        // Refused requests do not spend: a client that takes no gzip costs
        // nothing, and after 50 ms (2,000 bytes) the next one fits.
        assert_eq!(c.encode(&b, AcceptEncoding::IDENTITY, t0).0, Outcome::NotAccepted);
        let later = t0 + Duration::from_millis(50);
        assert!(matches!(c.encode(&b, GZIP, later).0, Outcome::Gzip { .. }));
        assert_eq!(c.budget().bytes_left(), 0);
    }
}
