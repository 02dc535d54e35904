//! A shard's rows on their way to the history store: made when the
//! shard's records were journaled, written once their epoch is durable.
//!
//! Rows come in groups, one per batch of records the shard journaled at
//! once (`Shard::flush_engine`), each marked with the position of its last
//! record and its epoch. A batch for the store is a run of whole groups,
//! oldest first, whose epochs are durable: its progress is the last
//! group's position, so a batch never ends inside a record and the store
//! can skip exactly what it already has after a restart.
//!
//! Until the store has a group it stays here, and reads see it: a read
//! right after a write finds the rows whatever the store's state.
//!
//! **Invariant:** groups are in position order, and the batch being
//! written holds the oldest ones.
//!
//! **Invariant:** the backlog holds at most `bytes_max` bytes of rows.
//! Past it the shard keeps trading and stops keeping rows (`overflowed`);
//! its journal keeps the records (snapshots do not pass what the store
//! has). Once the rows it kept are written, the writer reads the rows of
//! the records it dropped back from the journal (a catch-up, see
//! `server::history`) while the backlog keeps the rows of new records
//! again (`resume_after`).

use super::convert::row_bytes;
use super::rows::{OrderRow, Row, TradeRow, TransferId, TransferRow};
use super::{transfer_amount, Batch, Progress, StoreError, TransfersQuery};

/// Rows the writer puts in one batch at most (a larger group goes alone):
/// large enough that a commit's cost is spread thin, small enough that a
/// batch is written well within `history_call_timeout_ms` on a busy core.
pub const WRITER_BATCH_ROWS: usize = 16_384;
use std::collections::VecDeque;
use std::sync::Arc;

/// The rows one group of records produced.
#[derive(Debug)]
struct Group {
    lsn: u64,
    epoch: u64,
    rows: Vec<Row>,
    bytes: usize,
    made_ms: u64,
}

/// The batch being written, kept until the store confirms it.
#[derive(Debug)]
struct Writing {
    batch: Arc<Batch>,
    first_epoch: u64,
    bytes: usize,
    groups: usize,
    oldest_ms: u64,
}

/// Where a shard's rows wait for the store.
#[derive(Debug)]
pub struct Backlog {
    shard: u32,
    generation: u64,
    groups: VecDeque<Group>,
    writing: Option<Writing>,
    rows: usize,
    bytes: usize,
    bytes_max: usize,
    /// The epoch of the first rows dropped for room; from then on no rows
    /// are kept until `resume_after`.
    dropped_from_epoch: Option<u64>,
    /// Rows are dropped (since the group after this position).
    dropping_after: Option<u64>,
    /// The position of the newest group kept.
    newest_kept: u64,
    /// Rows of records up to here are no longer held: written to the
    /// store, or left to the catch-up from the journal.
    released: Option<Progress>,
}

impl Backlog {
    pub fn new(shard: u32, generation: u64, bytes_max: usize) -> Backlog {
        Backlog {
            shard,
            generation,
            groups: VecDeque::new(),
            writing: None,
            rows: 0,
            bytes: 0,
            bytes_max,
            dropped_from_epoch: None,
            dropping_after: None,
            newest_kept: 0,
            released: None,
        }
    }

    /// Adds the rows of the records up to `lsn`, journaled in `epoch`.
    /// Returns false when they were dropped for room (see `overflowed`).
    pub fn push(&mut self, lsn: u64, epoch: u64, rows: Vec<Row>, now_ms: u64) -> bool {
        if rows.is_empty() {
            return true;
        }
        if let Some(last) = self.groups.back() {
            assert!(lsn > last.lsn, "rows of record {lsn} after those of {}", last.lsn);
        }
        let bytes: usize = rows.iter().map(row_bytes).sum();
        if self.dropping_after.is_some() || self.bytes + bytes > self.bytes_max {
            self.dropped_from_epoch.get_or_insert(epoch);
            self.dropping_after.get_or_insert(self.newest_kept);
            return false;
        }
        self.newest_kept = lsn;
        self.rows += rows.len();
        self.bytes += bytes;
        self.groups.push_back(Group {
            lsn,
            epoch,
            rows,
            bytes,
            made_ms: now_ms,
        });
        true
    }

    /// The batch to write now: the one being written if it has not gone
    /// through yet, else the oldest groups whose epochs are at most
    /// `durable_epoch`, up to `WRITER_BATCH_ROWS` rows (a larger group goes
    /// alone). `None` when there is nothing to write.
    pub fn next_batch(&mut self, durable_epoch: u64) -> Option<Arc<Batch>> {
        if let Some(writing) = &self.writing {
            return Some(writing.batch.clone());
        }
        let mut take = 0;
        let mut rows = 0;
        for group in &self.groups {
            if group.epoch > durable_epoch || (take > 0 && rows + group.rows.len() > WRITER_BATCH_ROWS) {
                break;
            }
            take += 1;
            rows += group.rows.len();
        }
        if take == 0 {
            return None;
        }
        let taken: Vec<Group> = self.groups.drain(..take).collect();
        let first_epoch = taken[0].epoch;
        let oldest_ms = taken[0].made_ms;
        let lsn = taken[take - 1].lsn;
        let bytes = taken.iter().map(|g| g.bytes).sum();
        let mut all = Vec::with_capacity(rows);
        for group in taken {
            all.extend(group.rows);
        }
        let batch = Arc::new(Batch {
            shard: self.shard,
            progress: Progress {
                generation: self.generation,
                lsn,
            },
            rows: all,
        });
        self.writing = Some(Writing {
            batch: batch.clone(),
            first_epoch,
            bytes,
            groups: take,
            oldest_ms,
        });
        Some(batch)
    }

    /// The store has the batch `next_batch` gave.
    pub fn written(&mut self) {
        if let Some(writing) = self.writing.take() {
            self.rows -= writing.batch.rows.len();
            self.bytes -= writing.bytes;
            self.released = self.released.max(Some(writing.batch.progress));
        }
    }

    /// Every record of this epoch and the earlier ones is in the store,
    /// given that records from now on get `current_epoch` or later.
    pub fn absorbed_epoch(&self, current_epoch: u64) -> u64 {
        let oldest = self
            .writing
            .as_ref()
            .map(|w| w.first_epoch)
            .or_else(|| self.groups.front().map(|g| g.epoch));
        // The dropped rows' records must stay in the journal.
        let kept_from = oldest.unwrap_or(current_epoch);
        kept_from
            .min(self.dropped_from_epoch.unwrap_or(u64::MAX))
            .saturating_sub(1)
    }

    /// Whether rows were dropped for room and are not back in the store
    /// yet (reads that need the store cannot be answered whole).
    pub fn overflowed(&self) -> bool {
        self.dropped_from_epoch.is_some()
    }

    /// Whether rows of new records are dropped now (the shard need not
    /// make them: they come back from the journal).
    pub fn is_dropping(&self) -> bool {
        self.dropping_after.is_some()
    }

    /// When the backlog dropped rows and has written every row it kept:
    /// the position after which rows were dropped. The writer then
    /// calls `resume_after` and reads those rows back from the journal.
    pub fn needs_catch_up(&self) -> Option<u64> {
        let kept_all_written = self.writing.is_none() && self.groups.is_empty();
        self.dropping_after.filter(|_| kept_all_written)
    }

    /// Keeps the rows of records after `lsn` again (the newest record
    /// journaled when the catch-up starts); those up to it come from the
    /// journal. Until `caught_up`, nothing counts as absorbed past the
    /// first dropped rows.
    pub fn resume_after(&mut self, lsn: u64) {
        self.dropping_after = None;
        self.newest_kept = lsn;
        let position = Progress {
            generation: self.generation,
            lsn,
        };
        self.released = self.released.max(Some(position));
    }

    /// The catch-up wrote every dropped row.
    pub fn caught_up(&mut self) {
        if self.dropping_after.is_none() {
            self.dropped_from_epoch = None;
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// How long the oldest waiting rows have waited, in milliseconds.
    pub fn age_ms(&self, now_ms: u64) -> u64 {
        let oldest = self
            .writing
            .as_ref()
            .map(|w| w.oldest_ms)
            .or_else(|| self.groups.front().map(|g| g.made_ms));
        oldest.map_or(0, |t| now_ms.saturating_sub(t))
    }

    /// Groups waiting, the one being written included.
    pub fn groups(&self) -> usize {
        self.groups.len() + self.writing.as_ref().map_or(0, |w| w.groups)
    }

    /// Every waiting row, oldest first.
    fn all_rows(&self) -> impl Iterator<Item = &Row> {
        let writing = self.writing.iter().flat_map(|w| w.batch.rows.iter());
        writing.chain(self.groups.iter().flat_map(|g| g.rows.iter()))
    }

    /// The newest waiting state of each order of `user` in `symbol` that
    /// `keep` accepts, in order id order.
    pub fn orders(&self, user: u64, symbol: &str, keep: impl Fn(&OrderRow) -> bool) -> Vec<OrderRow> {
        let mut found: Vec<OrderRow> = Vec::new();
        for row in self.all_rows() {
            let Row::Order(o) = row else { continue };
            if o.user != user || o.symbol != symbol || !keep(o) {
                continue;
            }
            match found.iter_mut().find(|f| f.order_id == o.order_id) {
                Some(f) => *f = o.clone(),
                None => found.push(o.clone()),
            }
        }
        found.sort_by_key(|o| o.order_id);
        found
    }

    /// The waiting trades of `user` in `symbol` that `keep` accepts, in
    /// trade id order.
    pub fn trades(&self, user: u64, symbol: &str, keep: impl Fn(&TradeRow) -> bool) -> Vec<TradeRow> {
        let mut found: Vec<TradeRow> = self
            .all_rows()
            .filter_map(|row| match row {
                Row::Trade(t) if t.user == user && t.symbol == symbol && keep(t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        found.sort_by_key(|t| t.trade_id);
        found
    }

    /// Visits the waiting buyer's rows of `symbol`'s trades with times in
    /// `[from_ms, to_ms)` that records after `after` made: `after` is the
    /// shard's progress in a store read, and these are the rows that read
    /// lacks. False (nothing visited) when some rows after `after` are no
    /// longer here (written since the read, or dropped): read again.
    pub fn buyer_trades_after(
        &self,
        symbol: &str,
        (from_ms, to_ms): (u64, u64),
        after: Option<Progress>,
        mut visit: impl FnMut(&TradeRow),
    ) -> bool {
        if self.overflowed() || self.released > after {
            return false;
        }
        let position = |lsn| Progress {
            generation: self.generation,
            lsn,
        };
        let writing = self.writing.iter().filter(|w| Some(w.batch.progress) > after);
        let groups = self.groups.iter().filter(|g| Some(position(g.lsn)) > after);
        let rows = writing
            .flat_map(|w| w.batch.rows.iter())
            .chain(groups.flat_map(|g| g.rows.iter()));
        for row in rows {
            if let Row::Trade(t) = row {
                if t.is_buyer && t.symbol == symbol && t.time_ms >= from_ms && t.time_ms < to_ms {
                    visit(t);
                }
            }
        }
        true
    }

    /// The earliest time of a waiting buyer's row of `symbol`'s trades.
    pub fn first_buyer_trade_ms(&self, symbol: &str) -> Option<u64> {
        self.all_rows()
            .filter_map(|row| match row {
                Row::Trade(t) if t.is_buyer && t.symbol == symbol => Some(t.time_ms),
                _ => None,
            })
            .min()
    }

    /// The waiting deposits or withdrawals the query selects, newest
    /// first; their ids are this shard's and generation's.
    pub fn transfers(&self, query: &TransfersQuery) -> Result<Vec<TransferRow>, StoreError> {
        let mut found = Vec::new();
        for row in self.all_rows() {
            let Row::Ledger(entry) = row else { continue };
            let id = TransferId {
                shard: self.shard,
                generation: self.generation,
                lsn: entry.reference,
            };
            if query.selects(&id, entry) {
                found.push(TransferRow {
                    id,
                    asset: entry.asset.clone(),
                    amount: transfer_amount(query.cause, entry.delta)?,
                    time_ms: entry.time_ms,
                });
            }
        }
        found.sort_by(TransferRow::newest_first);
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::rows::UserRow;

    fn user(id: u64) -> Row {
        Row::User(UserRow {
            user: id,
            name: format!("u{id}"),
            created_ms: 1,
        })
    }

    #[test]
    fn batches_are_whole_durable_groups_in_order() {
        let mut backlog = Backlog::new(3, 7, 1 << 20);
        assert!(backlog.push(5, 1, vec![user(1), user(2)], 10));
        assert!(backlog.push(9, 2, vec![user(3)], 11));
        assert!(backlog.push(12, 3, vec![user(4)], 12));
        assert_eq!(backlog.absorbed_epoch(4), 0);
        let batch = backlog.next_batch(2).unwrap();
        assert_eq!(batch.shard, 3);
        assert_eq!(batch.progress, Progress { generation: 7, lsn: 9 });
        assert_eq!(batch.rows, vec![user(1), user(2), user(3)]);
        // Until written, the same batch comes back.
        assert_eq!(backlog.next_batch(3).unwrap().progress.lsn, 9);
        assert_eq!(backlog.rows(), 4);
        backlog.written();
        assert_eq!(backlog.rows(), 1);
        assert_eq!(backlog.absorbed_epoch(4), 2);
        assert!(backlog.next_batch(2).is_none());
        assert_eq!(backlog.next_batch(3).unwrap().progress.lsn, 12);
        backlog.written();
        assert_eq!(backlog.absorbed_epoch(4), 3);
        assert_eq!((backlog.rows(), backlog.bytes(), backlog.groups()), (0, 0, 0));
    }

    fn trade(id: u64, is_buyer: bool, time_ms: u64) -> Row {
        Row::Trade(TradeRow {
            user: 1,
            symbol: "BTCUSDT".into(),
            trade_id: id,
            order_id: id,
            price: 1,
            qty: 1,
            quote_qty: 1,
            commission: 0,
            commission_asset: "BTC".into(),
            is_buyer,
            is_maker: false,
            time_ms,
        })
    }

    #[test]
    fn buyer_trades_after_a_store_read_are_the_rows_it_lacks() {
        let mut backlog = Backlog::new(0, 4, 1 << 20);
        assert!(backlog.push(3, 1, vec![trade(1, true, 10), trade(1, false, 10)], 0));
        assert!(backlog.push(5, 1, vec![trade(2, true, 20), user(9)], 0));
        assert!(backlog.push(8, 2, vec![trade(3, true, 30)], 0));
        let ids = |backlog: &Backlog, range, after| {
            let mut ids = Vec::new();
            backlog
                .buyer_trades_after("BTCUSDT", range, after, |t| ids.push(t.trade_id))
                .then_some(ids)
        };
        let at = |generation, lsn| Some(Progress { generation, lsn });
        assert_eq!(ids(&backlog, (0, 100), None), Some(vec![1, 2, 3]));
        assert_eq!(ids(&backlog, (0, 30), None), Some(vec![1, 2]));
        assert_eq!(ids(&backlog, (0, 100), at(4, 3)), Some(vec![2, 3]));
        // A store that has an older generation lacks all of these.
        assert_eq!(ids(&backlog, (0, 100), at(3, 99)), Some(vec![1, 2, 3]));
        // The batch being written counts until it is written.
        assert_eq!(
            backlog.next_batch(1).unwrap().progress,
            Progress { generation: 4, lsn: 5 }
        );
        assert_eq!(ids(&backlog, (0, 100), at(3, 99)), Some(vec![1, 2, 3]));
        backlog.written();
        // Rows up to 5 left: a read that saw the store before them must
        // read again; one that saw them gets the rest.
        assert_eq!(ids(&backlog, (0, 100), at(4, 3)), None);
        assert_eq!(ids(&backlog, (0, 100), None), None);
        assert_eq!(ids(&backlog, (0, 100), at(4, 5)), Some(vec![3]));
        assert_eq!(ids(&backlog, (0, 100), at(4, 8)), Some(vec![]));
    }

    #[test]
    fn over_the_limit_rows_are_dropped_and_absorption_stops() {
        let one = row_bytes(&user(1));
        let mut backlog = Backlog::new(0, 1, 2 * one);
        assert!(backlog.push(1, 1, vec![user(1)], 0));
        assert!(!backlog.push(2, 2, vec![user(2), user(3)], 0));
        // Once over, nothing more is kept, even what would fit.
        assert!(!backlog.push(3, 3, vec![user(4)], 0));
        assert!(backlog.overflowed());
        backlog.next_batch(5).unwrap();
        backlog.written();
        assert_eq!(backlog.absorbed_epoch(9), 1);
    }

    #[test]
    fn an_overflow_is_caught_up_after_the_kept_rows() {
        let one = row_bytes(&user(1));
        let mut backlog = Backlog::new(0, 1, 2 * one);
        assert!(backlog.push(4, 1, vec![user(1)], 0));
        assert!(!backlog.push(6, 2, vec![user(2), user(3)], 0));
        assert!(!backlog.push(7, 3, vec![user(4)], 0));
        // The kept group first: no catch-up while it waits.
        assert_eq!(backlog.needs_catch_up(), None);
        backlog.next_batch(9).unwrap();
        backlog.written();
        assert_eq!(backlog.needs_catch_up(), Some(4));
        // Records up to 7 come from the journal; newer ones are kept again.
        backlog.resume_after(7);
        assert_eq!(backlog.needs_catch_up(), None);
        assert!(backlog.push(8, 4, vec![user(5)], 0));
        // Not absorbed past the first dropped epoch until caught up.
        assert_eq!(backlog.absorbed_epoch(9), 1);
        assert!(backlog.overflowed());
        backlog.caught_up();
        assert!(!backlog.overflowed());
        assert_eq!(backlog.absorbed_epoch(9), 3);
    }

    #[test]
    fn reads_see_the_newest_waiting_state() {
        let mut backlog = Backlog::new(0, 1, 1 << 20);
        let order = |id: u64, status: &str| {
            Row::Order(OrderRow {
                user: 1,
                symbol: "BTCUSDT".into(),
                order_id: id,
                client_order_id: String::new(),
                price: 1,
                orig_qty: 1,
                orig_quote_qty: 0,
                executed_qty: 0,
                cummulative_quote_qty: 0,
                status: status.into(),
                time_in_force: "GTC".into(),
                order_type: "LIMIT".into(),
                side: "BUY".into(),
                stop_price: 0,
                time_ms: id,
                update_time_ms: id,
                stp_mode: "NONE".into(),
                iceberg_qty: 0,
                trailing_delta: 0,
                order_list_id: 0,
            })
        };
        backlog.push(1, 1, vec![order(8, "NEW"), order(4, "NEW")], 0);
        backlog.next_batch(1).unwrap();
        backlog.push(2, 2, vec![order(8, "CANCELED")], 0);
        let found = backlog.orders(1, "BTCUSDT", |_| true);
        let states: Vec<(u64, &str)> = found.iter().map(|o| (o.order_id, o.status.as_str())).collect();
        assert_eq!(states, vec![(4, "NEW"), (8, "CANCELED")]);
        assert!(backlog.orders(2, "BTCUSDT", |_| true).is_empty());
    }

    /// Waiting transfers are found, newest first, with this shard's and
    /// generation's ids, in the batch being written and after it.
    #[test]
    fn waiting_transfers_carry_the_shard_and_generation() {
        use crate::store::rows::{LedgerCause, LedgerRow, ACCOUNT_EXTERNAL};
        let entry = |account: u64, delta: i64, reference: u64, time_ms: u64| {
            Row::Ledger(LedgerRow {
                account,
                asset: "USDT".into(),
                delta,
                cause: LedgerCause::Deposit,
                reference,
                time_ms,
            })
        };
        let mut backlog = Backlog::new(3, 7, 1 << 20);
        backlog.push(4, 1, vec![entry(ACCOUNT_EXTERNAL, -5, 4, 100), entry(1, 5, 4, 100)], 0);
        backlog.next_batch(1).unwrap();
        backlog.push(9, 2, vec![entry(1, 8, 9, 200), entry(2, 6, 9, 200)], 0);
        let query = TransfersQuery {
            user: 1,
            cause: LedgerCause::Deposit,
            asset: None,
            start_ms: 0,
            end_ms: 1_000,
            ids: None,
            limit: 10,
        };
        let found: Vec<(String, i64)> = backlog
            .transfers(&query)
            .unwrap()
            .iter()
            .map(|t| (t.id.to_string(), t.amount))
            .collect();
        assert_eq!(found, vec![("3-7-9".to_string(), 8), ("3-7-4".to_string(), 5)]);
        let withdrawals = TransfersQuery {
            cause: LedgerCause::Withdrawal,
            ..query
        };
        assert!(backlog.transfers(&withdrawals).unwrap().is_empty());
    }
}
