//! The server's state as the harness reads it through the public API: per
//! user the balances (`/api/v3/account`), every order (`allOrders`, and
//! `GET /api/v3/order` by `origClientOrderId` for each order the model
//! knows of) and every trade (`myTrades`), per market, and every order
//! list (`allOrderList`, and `GET /api/v3/orderList` by `orderListId`, or
//! by list client id for a list whose placement went unanswered, for each
//! list the model knows of); plus each market's book (`depth`), the admin
//! audit and user list.
//!
//! A snapshot is only meaningful at rest: `read_at_rest` reads until the
//! audit before and after a full read agree.

use crate::http::{admin_ok, signed, signed_ok, units, unless_busy, Conn};
use crate::model::{ListFacts, ListPlaced, Model, OrderFacts, MARKETS};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The longest the server may take to come to rest.
const REST_TIMEOUT_MS: u64 = 30_000;
/// Rows the harness asks `allOrders` and `myTrades` for (the maximum).
const ROWS_MAX: usize = 1000;

/// An order object as the server reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenOrder {
    pub market: usize,
    pub order_id: u64,
    pub client_id: String,
    pub side: String,
    pub kind: String,
    pub price: i64,
    /// `stopPrice`.
    pub stop: i64,
    pub orig_qty: i64,
    pub iceberg: i64,
    /// -1 for none.
    pub order_list_id: i64,
    pub executed: i64,
    pub quote: i64,
    pub status: String,
    pub time: u64,
    pub update_time: u64,
}

impl SeenOrder {
    fn parse(market: usize, v: &Value) -> Result<SeenOrder, String> {
        let text = |field: &str| v[field].as_str().map(str::to_string).ok_or(format!("{field} in {v}"));
        let int = |field: &str| v[field].as_u64().ok_or(format!("{field} in {v}"));
        if v["symbol"].as_str() != Some(MARKETS[market].symbol) {
            return Err(format!("order of another market: {v}"));
        }
        Ok(SeenOrder {
            market,
            order_id: int("orderId")?,
            client_id: text("clientOrderId")?,
            side: text("side")?,
            kind: text("type")?,
            price: units(v, "price")?,
            stop: units(v, "stopPrice")?,
            orig_qty: units(v, "origQty")?,
            iceberg: units(v, "icebergQty")?,
            order_list_id: v["orderListId"].as_i64().ok_or(format!("orderListId in {v}"))?,
            executed: units(v, "executedQty")?,
            quote: units(v, "cummulativeQuoteQty")?,
            status: text("status")?,
            time: int("time")?,
            update_time: int("updateTime")?,
        })
    }

    pub fn facts(&self) -> OrderFacts {
        OrderFacts {
            order_id: self.order_id,
            status: self.status.clone(),
            executed: self.executed,
            quote: self.quote,
        }
    }
}

/// An order list as the query endpoints report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenList {
    pub market: usize,
    pub list_id: u64,
    pub contingency: String,
    pub status_type: String,
    pub order_status: String,
    pub client_id: String,
    /// (orderId, clientOrderId) of its orders, in the list's order.
    pub orders: Vec<(u64, String)>,
    pub time: u64,
}

impl SeenList {
    fn parse(v: &Value) -> Result<SeenList, String> {
        let text = |field: &str| v[field].as_str().map(str::to_string).ok_or(format!("{field} in {v}"));
        let symbol = text("symbol")?;
        let market = MARKETS
            .iter()
            .position(|m| m.symbol == symbol)
            .ok_or(format!("a list of another market: {v}"))?;
        let orders = v["orders"].as_array().ok_or(format!("orders in {v}"))?;
        let orders = orders.iter().map(|o| {
            let id = o["orderId"].as_u64().ok_or(format!("orderId in {o}"))?;
            let client_id = o["clientOrderId"].as_str().ok_or(format!("clientOrderId in {o}"))?;
            Ok((id, client_id.to_string()))
        });
        Ok(SeenList {
            market,
            list_id: v["orderListId"].as_u64().ok_or(format!("orderListId in {v}"))?,
            contingency: text("contingencyType")?,
            status_type: text("listStatusType")?,
            order_status: text("listOrderStatus")?,
            client_id: text("listClientOrderId")?,
            orders: orders.collect::<Result<_, String>>()?,
            time: v["transactionTime"].as_u64().ok_or(format!("transactionTime in {v}"))?,
        })
    }

    pub fn facts(&self) -> ListFacts {
        ListFacts {
            list_id: self.list_id,
            order_ids: self.orders.iter().map(|(id, _)| *id).collect(),
        }
    }
}

/// One user's side of a trade.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenTrade {
    pub market: usize,
    pub id: u64,
    pub order_id: u64,
    pub price: i64,
    pub qty: i64,
    pub quote_qty: i64,
    pub commission: i64,
    pub commission_asset: String,
    pub is_buyer: bool,
    pub is_maker: bool,
    pub time: u64,
}

impl SeenTrade {
    fn parse(market: usize, v: &Value) -> Result<SeenTrade, String> {
        let int = |field: &str| v[field].as_u64().ok_or(format!("{field} in {v}"));
        let flag = |field: &str| v[field].as_bool().ok_or(format!("{field} in {v}"));
        Ok(SeenTrade {
            market,
            id: int("id")?,
            order_id: int("orderId")?,
            price: units(v, "price")?,
            qty: units(v, "qty")?,
            quote_qty: units(v, "quoteQty")?,
            commission: units(v, "commission")?,
            commission_asset: v["commissionAsset"].as_str().unwrap_or("").to_string(),
            is_buyer: flag("isBuyer")?,
            is_maker: flag("isMaker")?,
            time: int("time")?,
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserState {
    /// asset → (free, locked).
    pub balances: BTreeMap<String, (i64, i64)>,
    /// `allOrders` of every market.
    pub orders: Vec<SeenOrder>,
    /// `myTrades` of every market.
    pub trades: Vec<SeenTrade>,
    /// `GET /api/v3/order` by client order id; `None` for -2013.
    pub lookups: BTreeMap<String, Option<SeenOrder>>,
    /// `allOrderList`.
    pub lists: Vec<SeenList>,
    /// `GET /api/v3/orderList` by list client id; `None` for -2013.
    pub list_lookups: BTreeMap<String, Option<SeenList>>,
}

impl UserState {
    pub fn order(&self, market: usize, client_id: &str) -> Option<&SeenOrder> {
        self.orders
            .iter()
            .find(|o| o.market == market && o.client_id == client_id)
    }

    pub fn list(&self, client_id: &str) -> Option<&SeenList> {
        self.lists.iter().find(|l| l.client_id == client_id)
    }
}

/// One asset of the admin audit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditAsset {
    pub deposits: i64,
    pub withdrawals: i64,
    pub free: i64,
    pub locked: i64,
    pub fees: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Audit {
    pub ok: bool,
    pub assets: BTreeMap<String, AuditAsset>,
}

/// One market's book as `depth` shows it: (price, quantity) levels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Book {
    pub bids: Vec<(i64, i64)>,
    pub asks: Vec<(i64, i64)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Indexed like `Model::users`.
    pub users: Vec<UserState>,
    /// Indexed like `MARKETS`.
    pub books: Vec<Book>,
    pub audit: Audit,
    /// Every user id the admin API lists.
    pub user_ids: Vec<u64>,
}

fn read_audit(admin: &mut Conn) -> Result<Audit, String> {
    let v = admin_ok(admin, "GET", "/admin/v1/audit", None)?;
    let mut audit = Audit {
        ok: v["ok"].as_bool().ok_or(format!("ok in {v}"))?,
        assets: BTreeMap::new(),
    };
    for a in v["assets"].as_array().ok_or(format!("assets in {v}"))? {
        let asset = AuditAsset {
            deposits: units(a, "deposits")?,
            withdrawals: units(a, "withdrawals")?,
            free: units(a, "free")?,
            locked: units(a, "locked")?,
            fees: units(a, "fees")?,
        };
        audit
            .assets
            .insert(a["asset"].as_str().unwrap_or("").to_string(), asset);
    }
    Ok(audit)
}

fn read_user(api: &mut Conn, model: &Model, user: usize) -> Result<UserState, String> {
    let key = &model.users[user];
    let mut state = UserState::default();
    let account = signed_ok(api, key, "GET", "/api/v3/account", "")?;
    for b in account["balances"].as_array().ok_or(format!("balances in {account}"))? {
        let asset = b["asset"].as_str().unwrap_or("").to_string();
        state.balances.insert(asset, (units(b, "free")?, units(b, "locked")?));
    }
    for (market, m) in MARKETS.iter().enumerate() {
        let query = format!("symbol={}&limit={ROWS_MAX}", m.symbol);
        for v in rows(signed_ok(api, key, "GET", "/api/v3/allOrders", &query)?)? {
            state.orders.push(SeenOrder::parse(market, &v)?);
        }
        for v in rows(signed_ok(api, key, "GET", "/api/v3/myTrades", &query)?)? {
            state.trades.push(SeenTrade::parse(market, &v)?);
        }
    }
    for order in model.orders.iter().filter(|o| o.user == user) {
        let query = format!(
            "symbol={}&origClientOrderId={}",
            MARKETS[order.market].symbol, order.client_id
        );
        let what = format!("GET /api/v3/order?{query}");
        let reply = unless_busy(&what, || signed(api, key, "GET", "/api/v3/order", &query))?;
        let seen = match (reply.status, reply.code()) {
            (200, _) => Some(SeenOrder::parse(order.market, &reply.json()?)?),
            (400, Some(-2013)) => None,
            (status, _) => return Err(format!("GET /api/v3/order?{query}: {status} {}", reply.text())),
        };
        state.lookups.insert(order.client_id.clone(), seen);
    }
    let query = format!("limit={ROWS_MAX}");
    for v in rows(signed_ok(api, key, "GET", "/api/v3/allOrderList", &query)?)? {
        state.lists.push(SeenList::parse(&v)?);
    }
    for list in model.lists.iter().filter(|l| l.user == user) {
        let query = match &list.placed {
            ListPlaced::Known(facts) => format!("orderListId={}", facts.list_id),
            _ => format!("origClientOrderId={}", list.client_id),
        };
        let what = format!("GET /api/v3/orderList?{query}");
        let reply = unless_busy(&what, || signed(api, key, "GET", "/api/v3/orderList", &query))?;
        let seen = match (reply.status, reply.code()) {
            (200, _) => Some(SeenList::parse(&reply.json()?)?),
            (400, Some(-2013)) => None,
            (status, _) => return Err(format!("{what}: {status} {}", reply.text())),
        };
        state.list_lookups.insert(list.client_id.clone(), seen);
    }
    Ok(state)
}

fn read_book(api: &mut Conn, market: usize) -> Result<Book, String> {
    let what = format!("GET /api/v3/depth?symbol={}", MARKETS[market].symbol);
    let raw = format!("{what}&limit={ROWS_MAX} HTTP/1.1\r\nHost: t\r\n\r\n");
    let reply = unless_busy(&what, || api.request(raw.as_bytes()))?;
    if reply.status != 200 {
        return Err(format!("{what}: {} {}", reply.status, reply.text()));
    }
    let v = reply.json()?;
    let side = |name: &str| -> Result<Vec<(i64, i64)>, String> {
        let levels = rows(v[name].clone())?;
        levels
            .iter()
            .map(|l| {
                let level = |i: usize| {
                    let text = l[i].as_str().ok_or(format!("{name} level {l}"))?;
                    tradsys_engine::num::parse_units(text).map_err(|e| format!("{name} level {l}: {e}"))
                };
                Ok((level(0)?, level(1)?))
            })
            .collect()
    };
    Ok(Book {
        bids: side("bids")?,
        asks: side("asks")?,
    })
}

fn rows(v: Value) -> Result<Vec<Value>, String> {
    match v {
        Value::Array(rows) if rows.len() < ROWS_MAX => Ok(rows),
        Value::Array(_) => Err(format!("{ROWS_MAX} rows: the harness must stay below the page size")),
        other => Err(format!("expected an array, got {other}")),
    }
}

/// Reads everything once.
pub fn read(api: SocketAddr, admin: SocketAddr, model: &Model) -> Result<Snapshot, String> {
    let mut api = Conn::open(api).map_err(|e| e.0)?;
    let mut admin = Conn::open(admin).map_err(|e| e.0)?;
    let audit = read_audit(&mut admin)?;
    let users = (0..model.users.len())
        .map(|u| read_user(&mut api, model, u).map_err(|e| format!("user {u} ({}): {e}", model.users[u].user_id)))
        .collect::<Result<_, _>>()?;
    let books = (0..MARKETS.len())
        .map(|m| read_book(&mut api, m))
        .collect::<Result<_, _>>()?;
    let list = admin_ok(&mut admin, "GET", "/admin/v1/users", None)?;
    let user_ids = list
        .as_array()
        .ok_or(format!("users: {list}"))?
        .iter()
        .filter_map(|u| u["userId"].as_u64())
        .collect();
    Ok(Snapshot {
        users,
        books,
        audit,
        user_ids,
    })
}

/// Reads until the audit taken after a full read equals the one it began
/// with: nothing moved in between. A state that is at rest but fails the
/// audit is returned for the checks to report.
pub fn read_at_rest(api: SocketAddr, admin: SocketAddr, model: &Model) -> Result<Snapshot, String> {
    let deadline = Instant::now() + Duration::from_millis(REST_TIMEOUT_MS);
    loop {
        let snapshot = read(api, admin, model)?;
        let mut conn = Conn::open(admin).map_err(|e| e.0)?;
        let audit = read_audit(&mut conn)?;
        let at_rest = audit == snapshot.audit;
        if at_rest && (snapshot.audit.ok || Instant::now() > deadline) {
            return Ok(snapshot);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no rest within {REST_TIMEOUT_MS} ms: the audit moved from {:?} to {audit:?}",
                snapshot.audit
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
