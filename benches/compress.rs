//! Response compression benchmark: what gzip (and brotli) save on the
//! bodies tradsys sends, and what they cost in CPU per response, at the
//! sizes that decide the threshold (`http_compress_bytes_min`), the level
//! (`http_compress_level`) and the CPU budget
//! (`http_compress_input_bytes_per_second_max`).
//!
//! `cargo bench --bench compress` (optionally `-- --quick`: fewer sizes
//! and shorter timing, for a check that it runs).
//!
//! The bodies are the four large answers of the REST API in the exact
//! shapes the server renders them (field names and order, prices and
//! quantities with 8 decimals, millisecond times), with values from a
//! seeded random walk: `exchangeInfo` (the four shipped markets, then 60),
//! `depth` (levels per side), `klines` and `allOrders` (rows). Each is cut
//! to several element counts so that sizes run from about 100 bytes to
//! about 300 KB. Every encoder compresses each body repeatedly until
//! `CASE_TIME_MIN` has passed, in `BATCHES` batches; the figure is the
//! fastest batch's time per call: on a loaded machine other processes only
//! ever add time, so the least disturbed batch is the closest to the cost.

use std::fmt::Write;
use std::hint::black_box;
use std::io::Write as _;
use std::time::{Duration, Instant};

/// Time spent compressing one body with one encoder, over all batches.
const CASE_TIME_MIN: Duration = Duration::from_millis(60);
const CASE_TIME_MIN_QUICK: Duration = Duration::from_millis(15);
/// Batches per case; the fastest batch is reported.
const BATCHES: usize = 7;

/// xorshift64*: the same bodies on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An amount in 10⁻⁸ units as the server prints it: 8 decimals.
fn decimal(out: &mut String, units: u64) {
    let _ = write!(out, "{}.{:08}", units / 100_000_000, units % 100_000_000);
}

fn quoted(out: &mut String, units: u64) {
    out.push('"');
    decimal(out, units);
    out.push('"');
}

/// `GET /api/v3/depth`: `levels` bids and asks around 30,000.
fn depth(levels: usize) -> String {
    let mut rng = Rng(1);
    let mut out = String::from("{\"lastUpdateId\":1834467,\"bids\":[");
    for (side, sign) in [("bids", -1i64), ("asks", 1)] {
        if side == "asks" {
            out.push_str("],\"asks\":[");
        }
        // Prices in cents (tick 0.01), quantities in steps of 0.00001.
        let mut price: i64 = 3_000_000 + sign;
        for i in 0..levels {
            if i > 0 {
                out.push(',');
            }
            price += sign * (1 + rng.below(4) as i64);
            out.push('[');
            quoted(&mut out, price as u64 * 1_000_000);
            out.push(',');
            quoted(&mut out, (1 + rng.below(200_000)) * 1_000);
            out.push(']');
        }
    }
    out.push_str("]}");
    out
}

/// `GET /api/v3/klines`: `rows` one-minute candles.
fn klines(rows: usize) -> String {
    let mut rng = Rng(2);
    let mut out = String::from("[");
    let mut close: u64 = 3_000_000;
    let start = 1_796_400_000_000u64;
    for i in 0..rows {
        if i > 0 {
            out.push(',');
        }
        let open = close;
        close = (close as i64 + rng.below(2001) as i64 - 1000) as u64;
        let high = open.max(close) + rng.below(300);
        let low = open.min(close) - rng.below(300);
        let trades = 1 + rng.below(400);
        let volume = trades * (1 + rng.below(50_000)) * 1_000;
        let taker = volume / 100 * rng.below(100);
        let open_time = start + i as u64 * 60_000;
        let _ = write!(out, "[{open_time},");
        for price in [open, high, low, close] {
            quoted(&mut out, price * 1_000_000);
            out.push(',');
        }
        quoted(&mut out, volume);
        let _ = write!(out, ",{},", open_time + 59_999);
        quoted(&mut out, volume / 100_000_000 * close * 1_000_000 / 100);
        let _ = write!(out, ",{trades},");
        quoted(&mut out, taker);
        out.push(',');
        quoted(&mut out, taker / 100_000_000 * close * 1_000_000 / 100);
        out.push_str(",\"0\"]");
    }
    out.push(']');
    out
}

/// `GET /api/v3/allOrders`: `rows` orders of one user.
fn all_orders(rows: usize) -> String {
    let mut rng = Rng(3);
    let mut out = String::from("[");
    let mut time = 1_796_553_893_233u64;
    for i in 0..rows {
        if i > 0 {
            out.push(',');
        }
        let id = 1 + i as u64 * (1 + rng.below(3));
        time += rng.below(5_000);
        let price = (2_990_000 + rng.below(20_000)) * 1_000_000;
        let qty = (1 + rng.below(100_000)) * 1_000;
        let (status, executed) = match rng.below(3) {
            0 => ("NEW", 0),
            1 => ("FILLED", qty),
            _ => ("CANCELED", qty / 2),
        };
        let side = if rng.below(2) == 0 { "BUY" } else { "SELL" };
        let _ = write!(
            out,
            "{{\"symbol\":\"BTCUSDT\",\"orderId\":{id},\"orderListId\":-1,\"clientOrderId\":\"tradsys0x{}\",\"price\":",
            1_796_553_884_820_104u64 + i as u64
        );
        quoted(&mut out, price);
        out.push_str(",\"origQty\":");
        quoted(&mut out, qty);
        out.push_str(",\"executedQty\":");
        quoted(&mut out, executed);
        out.push_str(",\"origQuoteOrderQty\":\"0.00000000\",\"cummulativeQuoteQty\":");
        quoted(&mut out, executed / 100_000 * (price / 100_000_000) / 1_000);
        let _ = write!(
            out,
            ",\"status\":\"{status}\",\"timeInForce\":\"GTC\",\"type\":\"LIMIT\",\"side\":\"{side}\",\"stopPrice\":\"0.00000000\",\"icebergQty\":\"0.00000000\",\"time\":{time},\"updateTime\":{},\"isWorking\":true,\"workingTime\":{time},\"selfTradePreventionMode\":\"NONE\"}}",
            time + rng.below(60_000)
        );
    }
    out.push(']');
    out
}

/// One market of `GET /api/v3/exchangeInfo` as the server renders it.
fn market(out: &mut String, base: &str, quote: &str) {
    let _ = write!(
        out,
        "{{\"allowTrailingStop\":false,\"allowedSelfTradePreventionModes\":[\"NONE\",\"EXPIRE_TAKER\",\"EXPIRE_MAKER\",\"EXPIRE_BOTH\"],\"baseAsset\":\"{base}\",\"baseAssetPrecision\":8,\"baseCommissionPrecision\":8,\"cancelReplaceAllowed\":true,\"defaultSelfTradePreventionMode\":\"NONE\",\"filters\":[{{\"filterType\":\"PRICE_FILTER\",\"maxPrice\":\"1000000.00000000\",\"minPrice\":\"0.01000000\",\"tickSize\":\"0.01000000\"}},{{\"filterType\":\"LOT_SIZE\",\"maxQty\":\"9000.00000000\",\"minQty\":\"0.00001000\",\"stepSize\":\"0.00001000\"}},{{\"applyMaxToMarket\":false,\"applyMinToMarket\":true,\"avgPriceMins\":5,\"filterType\":\"NOTIONAL\",\"maxNotional\":\"9000000.00000000\",\"minNotional\":\"5.00000000\"}}],\"icebergAllowed\":false,\"isMarginTradingAllowed\":false,\"isSpotTradingAllowed\":true,\"ocoAllowed\":false,\"orderTypes\":[\"LIMIT\",\"LIMIT_MAKER\",\"MARKET\",\"STOP_LOSS\",\"STOP_LOSS_LIMIT\",\"TAKE_PROFIT\",\"TAKE_PROFIT_LIMIT\"],\"otoAllowed\":false,\"permissionSets\":[[\"SPOT\"]],\"permissions\":[],\"quoteAsset\":\"{quote}\",\"quoteAssetPrecision\":8,\"quoteCommissionPrecision\":8,\"quoteOrderQtyMarketAllowed\":true,\"quotePrecision\":8,\"status\":\"TRADING\",\"symbol\":\"{base}{quote}\"}}"
    );
}

/// `GET /api/v3/exchangeInfo` with `markets` markets.
fn exchange_info(markets: usize) -> String {
    const BASES: [&str; 10] = ["BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "DOT", "LTC", "LINK", "AVAX"];
    const QUOTES: [&str; 6] = ["USDT", "USD", "EUR", "BTC", "ETH", "FDUSD"];
    let mut out = String::from(
        "{\"timezone\":\"UTC\",\"serverTime\":1796553886891,\"rateLimits\":[{\"interval\":\"MINUTE\",\"intervalNum\":1,\"limit\":6000,\"rateLimitType\":\"REQUEST_WEIGHT\"},{\"interval\":\"SECOND\",\"intervalNum\":10,\"limit\":100,\"rateLimitType\":\"ORDERS\"},{\"interval\":\"DAY\",\"intervalNum\":1,\"limit\":200000,\"rateLimitType\":\"ORDERS\"},{\"interval\":\"MINUTE\",\"intervalNum\":5,\"limit\":61000,\"rateLimitType\":\"RAW_REQUESTS\"}],\"exchangeFilters\":[],\"symbols\":[",
    );
    for i in 0..markets {
        if i > 0 {
            out.push(',');
        }
        market(
            &mut out,
            BASES[i % BASES.len()],
            QUOTES[(i / BASES.len()) % QUOTES.len()],
        );
    }
    out.push_str("]}");
    out
}

/// Compresses a body and returns the output's size.
type Run = Box<dyn FnMut(&[u8]) -> usize>;

/// An encoder under test.
struct Encoder {
    name: &'static str,
    run: Run,
}

fn libdeflate(level: i32) -> Encoder {
    let names = [
        "",
        "libdeflate-1",
        "",
        "",
        "libdeflate-4",
        "",
        "libdeflate-6",
        "",
        "",
        "libdeflate-9",
    ];
    let lvl = libdeflater::CompressionLvl::new(level).unwrap_or_default();
    let mut compressor = libdeflater::Compressor::new(lvl);
    let mut out = Vec::new();
    Encoder {
        name: names[level as usize],
        run: Box::new(move |body| {
            out.resize(compressor.gzip_compress_bound(body.len()), 0);
            compressor.gzip_compress(body, &mut out).unwrap_or(0)
        }),
    }
}

fn flate2(level: u32) -> Encoder {
    let names = ["", "flate2-1", "", "", "", "", "flate2-6"];
    let mut out = Vec::new();
    Encoder {
        name: names[level as usize],
        run: Box::new(move |body| {
            out.clear();
            let mut encoder = flate2::write::GzEncoder::new(&mut out, flate2::Compression::new(level));
            let _ = encoder.write_all(body);
            let _ = encoder.finish();
            out.len()
        }),
    }
}

fn brotli(quality: i32) -> Encoder {
    let names = ["", "brotli-1", "", "", "brotli-4"];
    let mut out = Vec::new();
    Encoder {
        name: names[quality as usize],
        run: Box::new(move |body| {
            out.clear();
            let params = brotli::enc::BrotliEncoderParams {
                quality,
                lgwin: 18,
                ..Default::default()
            };
            let mut input = body;
            let _ = brotli::BrotliCompress(&mut input, &mut out, &params);
            out.len()
        }),
    }
}

/// The fastest batch's time per call, in microseconds, and the output size.
fn measure(encoder: &mut Encoder, body: &[u8], time_min: Duration) -> (f64, usize) {
    let size = (encoder.run)(body);
    let started = Instant::now();
    let mut calls = 0u32;
    while started.elapsed() < time_min / 10 {
        black_box((encoder.run)(black_box(body)));
        calls += 1;
    }
    let per_batch = (calls * 10 / BATCHES as u32).max(1);
    let mut batches: Vec<f64> = (0..BATCHES)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_batch {
                black_box((encoder.run)(black_box(body)));
            }
            t.elapsed().as_secs_f64() * 1e6 / f64::from(per_batch)
        })
        .collect();
    batches.sort_by(f64::total_cmp);
    (batches[0], size)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let time_min = if quick { CASE_TIME_MIN_QUICK } else { CASE_TIME_MIN };
    let mut encoders = vec![
        libdeflate(1),
        libdeflate(4),
        libdeflate(6),
        libdeflate(9),
        flate2(1),
        flate2(6),
        brotli(1),
        brotli(4),
    ];
    let counts: &[usize] = if quick {
        &[2, 100]
    } else {
        &[1, 2, 4, 8, 16, 64, 256, 1000, 5000]
    };
    let mut bodies: Vec<(String, String)> = Vec::new();
    for &n in counts {
        bodies.push((format!("depth {n}"), depth(n)));
        bodies.push((format!("klines {n}"), klines(n)));
        bodies.push((format!("allOrders {n}"), all_orders(n)));
    }
    bodies.push(("exchangeInfo 4".into(), exchange_info(4)));
    bodies.push(("exchangeInfo 60".into(), exchange_info(60)));
    bodies.sort_by_key(|(_, b)| b.len());
    println!(
        "# body, bytes, then per encoder: output bytes, µs per call (fastest of {BATCHES} batches), MB/s of input"
    );
    print!("{:<18} {:>8}", "body", "bytes");
    for e in &encoders {
        print!(" | {:>14} {:>8} {:>6}", e.name, "µs", "MB/s");
    }
    println!();
    for (name, body) in &bodies {
        print!("{name:<18} {:>8}", body.len());
        for e in &mut encoders {
            let (us, size) = measure(e, body.as_bytes(), time_min);
            print!(" | {size:>14} {us:>8.2} {:>6.0}", body.len() as f64 / us);
        }
        println!();
    }
}
