//! A shard's durable state outside a live executor: what snapshots store
//! and what recovery and the snapshot thread replay records into.

use crate::marketdata::{MarketData, MarketDataLimits, TapeTrade};
use crate::trading::msg::EngineMsg;
use crate::trading::record::Record;
use crate::trading::{Output, Trading, TradingImage};
use std::collections::VecDeque;
use tradsys_engine::market::MarketSpec;
use tradsys_engine::order::MarketId;

/// Everything a snapshot keeps of one shard.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ShardImage {
    pub trading: TradingImage,
    /// Trades, candles and tickers of the markets the shard owns.
    pub market_data: Vec<Option<MarketData>>,
}

/// An engine message sent on the link to shard `to` that the receiver had
/// not journaled at a snapshot's cut: recovery delivers it again.
#[derive(Clone, Copy, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct InFlight {
    pub to: u32,
    pub seq: u64,
    pub msg: EngineMsg,
}

/// The market data a shard keeps: one entry per market it owns.
pub fn market_data_for(trading: &Trading, shard: u32) -> Vec<Option<MarketData>> {
    (0..trading.specs().len())
        .map(|m| {
            (trading.market_shard(MarketId(m as u16)) == shard).then(|| MarketData::new(MarketDataLimits::DEFAULT))
        })
        .collect()
}

/// What a replay hands out of every input it runs: the history store's
/// rows are made from it (see `store::convert`). A tap belongs to one
/// shard of one generation.
pub trait Tap: Send {
    /// The shard ran journal record `lsn` (`record`), or an engine message
    /// recovery delivered again (`record` is `None`; `lsn` then counts on
    /// past the shard's last record, the same way on every recovery of
    /// the same files), and produced `out`.
    fn applied(&mut self, lsn: u64, record: Option<&Record>, trading: &Trading, out: &Output);
}

/// A shard being rebuilt from a snapshot and its journal.
pub struct ReplayShard {
    pub trading: Trading,
    pub market_data: Vec<Option<MarketData>>,
    /// The sequence number of the last record applied.
    pub last_lsn: u64,
    /// The newest messages this shard sent on each link while replaying,
    /// in order, at most `IN_FLIGHT_KEPT_PER_LINK_MAX` per link: only the
    /// newest can still be in flight at a cut.
    sent: Vec<VecDeque<InFlight>>,
    /// The engine's output buffers between two records.
    spare: Output,
    /// Messages delivered again after the last record (recovery only).
    delivered: u64,
    pub tap: Option<Box<dyn Tap>>,
}

/// Messages kept per link while replaying. Messages in flight at a cut are
/// those waiting in the sender's outbox and the channel, plus those the
/// receiver ran in epochs after the cut: far fewer than this. Recovery
/// refuses to go on (instead of losing one) if ever more were needed.
pub const IN_FLIGHT_KEPT_PER_LINK_MAX: usize = 1 << 17;

impl ReplayShard {
    /// A shard with no state yet.
    pub fn fresh(shard: u32, shards: u32, specs: Vec<MarketSpec>) -> ReplayShard {
        let trading = Trading::replaying(shard, shards, specs);
        let market_data = market_data_for(&trading, shard);
        ReplayShard {
            trading,
            market_data,
            last_lsn: 0,
            sent: (0..shards).map(|_| VecDeque::new()).collect(),
            spare: Output::default(),
            delivered: 0,
            tap: None,
        }
    }

    pub fn from_image(image: ShardImage, specs: Vec<MarketSpec>) -> Result<ReplayShard, String> {
        let shards = image.trading.shards;
        let mut trading = Trading::from_image(image.trading, specs)?;
        trading.set_live(false);
        Ok(ReplayShard {
            trading,
            market_data: image.market_data,
            last_lsn: 0,
            sent: (0..shards).map(|_| VecDeque::new()).collect(),
            spare: Output::default(),
            delivered: 0,
            tap: None,
        })
    }

    /// Applies one journaled record, as the live shard did.
    pub fn apply(&mut self, lsn: u64, record: &Record) {
        assert!(lsn > self.last_lsn, "record {lsn} replayed after {}", self.last_lsn);
        self.trading.apply(record);
        self.last_lsn = lsn;
        self.absorb(lsn, Some(record));
    }

    /// Takes an engine message again during recovery (not journaled: the
    /// state it leads to goes into the next snapshot).
    pub fn deliver(&mut self, from: u32, message: InFlight) {
        self.trading.receive(from, message.seq, message.msg);
        self.delivered += 1;
        self.absorb(self.last_lsn + self.delivered, None);
    }

    /// Does with the engine's outputs what `Shard::flush_engine` does with
    /// them, minus everything that talks to clients.
    fn absorb(&mut self, lsn: u64, record: Option<&Record>) {
        self.trading.swap_output(&mut self.spare);
        if let Some(tap) = self.tap.as_mut() {
            tap.applied(lsn, record, &self.trading, &self.spare);
        }
        let out = &mut self.spare;
        for fill in &out.trades {
            if let Some(data) = self.market_data[usize::from(fill.market.0)].as_mut() {
                data.record(&TapeTrade::from(fill));
            }
        }
        for (to, seq, msg) in out.outgoing.drain(..) {
            let link = &mut self.sent[to as usize];
            if link.len() == IN_FLIGHT_KEPT_PER_LINK_MAX {
                link.pop_front();
            }
            link.push_back(InFlight { to, seq, msg });
        }
        out.clear();
    }

    /// The messages kept since the last call, link by link, each link in
    /// order.
    pub fn take_sent(&mut self) -> Vec<InFlight> {
        self.sent.iter_mut().flat_map(|link| link.drain(..)).collect()
    }

    pub fn into_image(self) -> ShardImage {
        ShardImage {
            trading: self.trading.into_image(),
            market_data: self.market_data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durability::snapshot::{decode_file, write_parts, SnapshotHeader};
    use tradsys_engine::num::Amount;

    /// One user's deposit and withdrawal on a 1-shard server, as a snapshot
    /// file's bytes.
    fn snapshot_bytes(specs: &[MarketSpec], dir: &std::path::Path) -> Result<Vec<u8>, String> {
        let mut shard = ReplayShard::fresh(0, 1, specs.to_vec());
        let trading = &mut shard.trading;
        let user = trading.allocate_user_id().ok_or("no user id")?;
        trading.create_user(user, "alice").map_err(|e| e.to_string())?;
        trading
            .transfer(user, "USDT", Amount(DEPOSIT), true)
            .map_err(|e| e.to_string())?;
        trading
            .transfer(user, "USDT", Amount(WITHDRAWAL), false)
            .map_err(|e| e.to_string())?;
        let image = ShardImage {
            trading: shard.trading.into_image(),
            market_data: shard.market_data,
        };
        let header = SnapshotHeader {
            cut: 1,
            covered_lsn: 0,
            shard: 0,
            shards: 1,
        };
        write_parts(dir, header, &image, &[]).map_err(|e| e.to_string())?;
        let file = std::fs::read_dir(dir)
            .map_err(|e| e.to_string())?
            .next()
            .ok_or("no snapshot written")?;
        let bytes = std::fs::read(file.map_err(|e| e.to_string())?.path()).map_err(|e| e.to_string());
        let _ = std::fs::remove_dir_all(dir);
        bytes
    }

    const DEPOSIT: i64 = 5_000_000_000_123;
    const WITHDRAWAL: i64 = 1_000_000_000_000;

    /// A snapshot whose checksum holds but whose content is not a state the
    /// engine makes (a free balance one unit more than the deposits and
    /// withdrawals allow) is refused with the reason, never trusted.
    #[test]
    fn a_snapshot_with_a_valid_checksum_and_an_impossible_balance_is_refused() -> Result<(), String> {
        let specs = tradsys_engine::market::parse_markets(include_str!("../../shards/markets.toml"))
            .map_err(|e| e.to_string())?;
        let dir = std::env::temp_dir().join(format!("tradsys-image-test-{}", std::process::id()));
        let mut bytes = snapshot_bytes(&specs, &dir)?;
        let (_, snap) = decode_file(&bytes)?;
        let usdt = snap.image.trading.accounts.asset_id("USDT").ok_or("USDT")?;
        assert!(ReplayShard::from_image(snap.image, specs.clone()).is_ok());
        // The free balance, the only place its value is written.
        let free = (DEPOSIT - WITHDRAWAL).to_le_bytes();
        let at: Vec<usize> = (0..bytes.len() - 8).filter(|&i| bytes[i..i + 8] == free).collect();
        assert_eq!(at.len(), 1, "the free balance is written once");
        bytes[at[0]..at[0] + 8].copy_from_slice(&(DEPOSIT - WITHDRAWAL + 1).to_le_bytes());
        let end = bytes.len() - 4;
        let crc = crc32c::crc32c(&bytes[..end]);
        bytes[end..].copy_from_slice(&crc.to_le_bytes());
        let (_, snap) = decode_file(&bytes)?;
        let refused = ReplayShard::from_image(snap.image, specs).err();
        let expected = format!(
            "snapshot of shard 0: not a consistent state: accounts: asset {} is not conserved: {} held and 0 in \
             fees against Some({}) that came in",
            usdt.0,
            DEPOSIT - WITHDRAWAL + 1,
            DEPOSIT - WITHDRAWAL
        );
        assert_eq!(refused, Some(expected));
        Ok(())
    }
}
