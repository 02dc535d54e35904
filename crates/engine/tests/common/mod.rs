//! Shared fixtures for the engine's integration tests.
#![allow(dead_code)]

pub mod ops;

use tradsys_engine::book::BookCapacity;
use tradsys_engine::driver::{Exchange, Output};
use tradsys_engine::market::{parse_markets, MarketSpec};
use tradsys_engine::num::Amount;
use tradsys_engine::num::{Price, Qty};
use tradsys_engine::order::{ClientOrderId, MarketId, OrderQty, OrderRequest, OrderType, Side};
use tradsys_engine::order::{StpMode, TimeInForce};
use tradsys_engine::EngineError;

/// Three markets sharing assets so that balances interact across books.
pub const TEST_MARKETS: &str = r#"
[[market]]
symbol = "BTCUSDT"
base_asset = "BTC"
base_asset_precision = 8
quote_asset = "USDT"
quote_asset_precision = 8
tick_size = "0.01"
step_size = "0.001"
min_price = "0.01"
max_price = "100000"
min_qty = "0.001"
max_qty = "1000"
min_notional = "1"
max_notional = "1000000"
maker_commission = "0.001"
taker_commission = "0.002"

[[market]]
symbol = "ETHUSDT"
base_asset = "ETH"
base_asset_precision = 8
quote_asset = "USDT"
quote_asset_precision = 8
tick_size = "0.1"
step_size = "0.01"
min_price = "0.1"
max_price = "100000"
min_qty = "0.01"
max_qty = "1000"
min_notional = "1"
max_notional = "1000000"
maker_commission = "0"
taker_commission = "0.001"

[[market]]
symbol = "ETHBTC"
base_asset = "ETH"
base_asset_precision = 8
quote_asset = "BTC"
quote_asset_precision = 8
tick_size = "0.00001"
step_size = "0.001"
min_price = "0.00001"
max_price = "1000"
min_qty = "0.001"
max_qty = "1000"
min_notional = "0.0001"
max_notional = "1000"
maker_commission = "0.00075"
taker_commission = "0.00075"
"#;

pub fn specs() -> Vec<MarketSpec> {
    match parse_markets(TEST_MARKETS) {
        Ok(specs) => specs,
        Err(e) => panic!("test markets: {e}"),
    }
}

pub fn p(text: &str) -> Price {
    Price::parse(text).unwrap()
}

pub fn q(text: &str) -> Qty {
    Qty::parse(text).unwrap()
}

pub fn limit(market: u16, side: Side, price: &str, qty: &str, tif: TimeInForce) -> OrderRequest {
    OrderRequest {
        market: MarketId(market),
        side,
        kind: OrderType::Limit,
        time_in_force: Some(tif),
        price: Some(p(price)),
        qty: OrderQty::Base(q(qty)),
        stop_price: None,
        client_order_id: None,
        stp: StpMode::None,
        iceberg_qty: None,
        trailing_delta: None,
    }
}

pub fn client(text: &str) -> Option<ClientOrderId> {
    ClientOrderId::new(text)
}

/// A funded exchange (`funded_exchange`), the output of its last
/// operation, and the next order id; each test file adds what it asks of
/// it.
pub struct Fixture {
    pub exchange: Exchange,
    pub out: Output,
    pub next_id: u64,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture {
            exchange: funded_exchange(),
            out: Output::with_capacity(64),
            next_id: 1,
        }
    }

    /// A fixture where `THIRD` is funded too.
    pub fn with_third() -> Fixture {
        let mut f = Fixture::new();
        fund(&mut f.exchange, THIRD);
        f
    }

    /// Places an order under the next id; the id, or the refusal.
    pub fn submit(&mut self, user: u64, request: &OrderRequest) -> Result<u64, EngineError> {
        let id = self.next_id;
        self.next_id += 1;
        self.out.clear();
        self.exchange.place(user, request, id, id, &mut self.out)?;
        self.exchange.check_invariants();
        Ok(id)
    }

    /// Places an order that must be accepted; its id.
    pub fn accept(&mut self, user: u64, request: &OrderRequest) -> u64 {
        match self.submit(user, request) {
            Ok(id) => id,
            Err(e) => panic!("order refused: {e}"),
        }
    }

    /// `user`'s free and locked `asset`, as Binance prints them.
    pub fn balance(&self, user: u64, asset: &str) -> (String, String) {
        let id = self.exchange.asset_id(asset).expect("an asset");
        let b = self.exchange.account(user).balance(user, id);
        (b.free.to_string(), b.locked.to_string())
    }

    /// The last operation's fills as (resting order, quantity).
    pub fn maker_fills(&self) -> Vec<(u64, String)> {
        self.out
            .fills
            .iter()
            .map(|f| (f.maker_order, f.qty.to_string()))
            .collect()
    }
}

/// The user who rests orders in the table tests, and the one who takes.
pub const MAKER: u64 = 1;
pub const TAKER: u64 = 2;
/// A third user, funded by `Fixture::with_third`.
pub const THIRD: u64 = 3;

/// The test markets over two account machines with small books; the maker
/// and the taker hold 10 BTC, 100,000 USDT and 10 ETH each.
pub fn funded_exchange() -> Exchange {
    let mut exchange = Exchange::new(
        &specs(),
        2,
        BookCapacity {
            orders_max: 1024,
            levels_max: 64,
        },
    );
    for user in [MAKER, TAKER] {
        fund(&mut exchange, user);
    }
    exchange
}

/// Deposits 10 BTC, 100,000 USDT and 10 ETH for `user`.
fn fund(exchange: &mut Exchange, user: u64) {
    for (asset, amount) in [("BTC", "10"), ("USDT", "100000"), ("ETH", "10")] {
        let id = exchange.asset_id(asset).unwrap();
        exchange.deposit(user, id, Amount::parse(amount).unwrap()).unwrap();
    }
}
