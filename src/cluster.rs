//! The cluster map (`shards/cluster.toml`): the tradsys instances that
//! serve one exchange together, and which users and markets each owns.
//!
//! Users are placed by hash slots, as Redis Cluster places keys: a user's
//! slot is a stable hash of the user id (`owner_of(user, SLOTS)`, the hash
//! the shards of one instance use) and each instance owns ranges of the
//! [`SLOTS`] slots. The map then names the owner of every user without a
//! lookup, every instance computes the same answer, and moving users is
//! moving slot ranges. A market is pinned to an instance by symbol, or
//! placed by a stable hash of its symbol (FNV-1a) over the instances in map
//! order. Inside an instance its shards own users and markets as on a
//! single host.
//!
//! `tradsys cluster check` reads a map with the markets file and either
//! prints who owns what or stops with one line naming the first problem.
//! Every instance must read the same map: user ids are unique across the
//! cluster because an instance hands out only ids whose slot it owns.

use serde::Deserialize;
use std::net::SocketAddr;
use tradsys_engine::market::MarketSpec;

/// Hash slots users are spread over (Redis Cluster's number).
pub const SLOTS: u32 = 16_384;
/// Instances one map may name.
pub const INSTANCES_MAX: usize = 64;
/// Slot ranges one instance may list.
const RANGES_PER_INSTANCE_MAX: usize = 1_024;
/// Longest instance id.
const ID_BYTES_MAX: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClusterError {
    #[error("cluster map: {0}")]
    Syntax(String),
    #[error("cluster map: {0}")]
    Invalid(String),
}

/// One instance as the map names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    /// Where clients (and the front) reach its API.
    pub api: SocketAddr,
    /// Where the other instances' links reach it.
    pub link: SocketAddr,
    /// The user slots it owns, as inclusive ranges in the order listed.
    pub slots: Vec<(u32, u32)>,
    /// The markets pinned to it.
    pub markets: Vec<String>,
}

/// A validated map.
#[derive(Debug)]
pub struct ClusterMap {
    pub instances: Vec<Instance>,
    /// The owning instance of each slot.
    slot_owner: Vec<u8>,
    /// The owning instance of each market, in the markets file's order.
    market_owner: Vec<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMap {
    instance: Vec<RawInstance>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstance {
    id: String,
    api: String,
    link: String,
    slots: Vec<String>,
    #[serde(default)]
    markets: Vec<String>,
}

fn invalid(problem: String) -> ClusterError {
    ClusterError::Invalid(problem)
}

/// Reads and validates a map against the markets the exchange serves.
pub fn parse(text: &str, specs: &[MarketSpec]) -> Result<ClusterMap, ClusterError> {
    let raw: RawMap = toml::from_str(text).map_err(|e| ClusterError::Syntax(e.message().to_string()))?;
    if raw.instance.is_empty() || raw.instance.len() > INSTANCES_MAX {
        return Err(invalid(format!(
            "{} instances: between 1 and {INSTANCES_MAX}",
            raw.instance.len()
        )));
    }
    let mut instances: Vec<Instance> = Vec::with_capacity(raw.instance.len());
    for r in raw.instance {
        let instance = instance(r)?;
        let clash = instances.iter().find(|o| {
            o.id == instance.id
                || [o.api, o.link]
                    .iter()
                    .any(|a| [instance.api, instance.link].contains(a))
        });
        if let Some(other) = clash {
            return Err(invalid(format!(
                "instances {:?} and {:?} share an id or an address",
                other.id, instance.id
            )));
        }
        if instance.api == instance.link {
            return Err(invalid(format!(
                "instance {:?}: the API and the link share {}",
                instance.id, instance.api
            )));
        }
        instances.push(instance);
    }
    let slot_owner = slot_owners(&instances)?;
    let market_owner = market_owners(&instances, specs)?;
    Ok(ClusterMap {
        instances,
        slot_owner,
        market_owner,
    })
}

fn instance(r: RawInstance) -> Result<Instance, ClusterError> {
    let id_ok = !r.id.is_empty()
        && r.id.len() <= ID_BYTES_MAX
        && r.id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !id_ok {
        return Err(invalid(format!(
            "instance id {:?}: 1 to {ID_BYTES_MAX} of a-z, 0-9 and -",
            r.id
        )));
    }
    let address = |what: &str, text: &str| {
        text.parse::<SocketAddr>().map_err(|_| {
            invalid(format!(
                "instance {:?}: {what} {text:?} is not an IP address and port",
                r.id
            ))
        })
    };
    if r.slots.len() > RANGES_PER_INSTANCE_MAX {
        return Err(invalid(format!(
            "instance {:?}: more than {RANGES_PER_INSTANCE_MAX} slot ranges",
            r.id
        )));
    }
    let slots = r
        .slots
        .iter()
        .map(|range| slot_range(range).map_err(|p| invalid(format!("instance {:?}: slots {range:?}: {p}", r.id))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Instance {
        api: address("api", &r.api)?,
        link: address("link", &r.link)?,
        id: r.id,
        slots,
        markets: r.markets,
    })
}

/// "N" or "FIRST-LAST", inclusive, below `SLOTS`.
fn slot_range(text: &str) -> Result<(u32, u32), String> {
    let number = |s: &str| {
        s.trim()
            .parse::<u32>()
            .map_err(|_| format!("{s:?} is not a slot number"))
    };
    let (first, last) = match text.split_once('-') {
        Some((a, b)) => (number(a)?, number(b)?),
        None => {
            let n = number(text)?;
            (n, n)
        }
    };
    if first > last || last >= SLOTS {
        return Err(format!("a range within 0-{}", SLOTS - 1));
    }
    Ok((first, last))
}

/// Every slot owned by exactly one instance.
fn slot_owners(instances: &[Instance]) -> Result<Vec<u8>, ClusterError> {
    const NONE: u8 = u8::MAX;
    let mut owner = vec![NONE; SLOTS as usize];
    for (i, instance) in instances.iter().enumerate() {
        for &(first, last) in &instance.slots {
            for slot in first..=last {
                let held = &mut owner[slot as usize];
                if *held != NONE {
                    return Err(invalid(format!(
                        "slot {slot} is owned by {:?} and {:?}",
                        instances[usize::from(*held)].id,
                        instance.id
                    )));
                }
                *held = i as u8;
            }
        }
    }
    match owner.iter().position(|&o| o == NONE) {
        Some(slot) => Err(invalid(format!("slot {slot} is owned by no instance"))),
        None => Ok(owner),
    }
}

/// Pinned markets where they are pinned, the others by hash.
fn market_owners(instances: &[Instance], specs: &[MarketSpec]) -> Result<Vec<u8>, ClusterError> {
    let mut owner: Vec<Option<u8>> = vec![None; specs.len()];
    for (i, instance) in instances.iter().enumerate() {
        for symbol in &instance.markets {
            let Some(m) = specs.iter().position(|s| &s.symbol == symbol) else {
                return Err(invalid(format!(
                    "instance {:?} pins {symbol:?}, which the markets file does not list",
                    instance.id
                )));
            };
            if let Some(other) = owner[m].replace(i as u8) {
                return Err(invalid(format!(
                    "{symbol} is pinned to {:?} and {:?}",
                    instances[usize::from(other)].id,
                    instance.id
                )));
            }
        }
    }
    let hashed = |spec: &MarketSpec| {
        let mut h = tradsys_engine::hash::StateHasher::default();
        h.bytes(spec.symbol.as_bytes());
        (h.finish() % instances.len() as u64) as u8
    };
    Ok(owner
        .iter()
        .zip(specs)
        .map(|(pinned, spec)| pinned.unwrap_or_else(|| hashed(spec)))
        .collect())
}

impl ClusterMap {
    /// A user's hash slot.
    pub fn user_slot(user: u64) -> u32 {
        tradsys_engine::account::owner_of(user, SLOTS)
    }

    /// The index (in `instances`) of the instance that owns `user`.
    pub fn user_instance(&self, user: u64) -> usize {
        usize::from(self.slot_owner[Self::user_slot(user) as usize])
    }

    /// How many slots instance `i` owns.
    pub fn slot_count(&self, i: usize) -> usize {
        self.slot_owner.iter().filter(|&&o| usize::from(o) == i).count()
    }

    /// The index of the instance that owns market `market` (its place in
    /// the markets file).
    pub fn market_instance(&self, market: usize) -> usize {
        usize::from(self.market_owner[market])
    }

    /// Who owns what, one line per instance, for `tradsys cluster check`.
    pub fn summary(&self, specs: &[MarketSpec]) -> String {
        (0..self.instances.len())
            .map(|i| format!("{}\n", self.describe(i, specs)))
            .collect()
    }

    /// What instance `i` is and owns, in one line.
    pub fn describe(&self, i: usize, specs: &[MarketSpec]) -> String {
        let instance = &self.instances[i];
        let slots = self.slot_count(i);
        let markets: Vec<&str> = specs
            .iter()
            .enumerate()
            .filter(|&(m, _)| self.market_instance(m) == i)
            .map(|(_, s)| s.symbol.as_str())
            .collect();
        format!(
            "instance {} api {} link {}: {slots} slots, markets {}",
            instance.id,
            instance.api,
            instance.link,
            if markets.is_empty() {
                "none".to_string()
            } else {
                markets.join(",")
            }
        )
    }
}

impl ClusterMap {
    /// An nginx front for the map (`tradsys cluster nginx`), to include in
    /// the `http` block, listening on `listen` (nginx's `listen` value).
    /// A request goes to the instance that owns what it names when the
    /// front can tell from the request alone, so that the hop between
    /// instances is the exception; anything else goes to the instance with
    /// the fewest connections, which carries it to the owner.
    pub fn nginx(&self, specs: &[MarketSpec], listen: &str) -> String {
        let mut out = String::from(NGINX_HEAD);
        let upstream = |i: usize| format!("tradsys_{}", self.instances[i].id.replace('-', "_"));
        for (i, instance) in self.instances.iter().enumerate() {
            out.push_str(&format!(
                "upstream {} {{\n    server {} max_fails=3 fail_timeout=5s;\n    keepalive 64;\n    keepalive_requests 1000000;\n}}\n\n",
                upstream(i),
                instance.api
            ));
        }
        out.push_str("upstream tradsys_any {\n    least_conn;\n");
        for instance in &self.instances {
            out.push_str(&format!("    server {} max_fails=3 fail_timeout=5s;\n", instance.api));
        }
        out.push_str("    keepalive 256;\n    keepalive_requests 1000000;\n}\n\n");
        let hint = |i: usize| format!("[0-9]{{{}}}{:02}", crate::auth::KEY_USER_DIGITS, i);
        out.push_str(NGINX_BY_KEY);
        out.push_str("map $http_x_mbx_apikey $tradsys_by_key {\n");
        for i in 0..self.instances.len() {
            out.push_str(&format!("    \"~^{}\" {};\n", hint(i), upstream(i)));
        }
        out.push_str("    default \"\";\n}\n\n");
        out.push_str("# Market data: the instance of the market the symbol names.\n");
        out.push_str("map $arg_symbol $tradsys_by_symbol {\n");
        for (m, spec) in specs.iter().enumerate() {
            out.push_str(&format!("    {} {};\n", spec.symbol, upstream(self.market_instance(m))));
        }
        out.push_str("    default tradsys_any;\n}\n\n");
        out.push_str(
            "map $tradsys_by_key $tradsys_rest {\n    \"\" $tradsys_by_symbol;\n    default $tradsys_by_key;\n}\n\n",
        );
        out.push_str("# A stream: /ws/<listenKey> to the instance its hint names, /ws/<symbol>@...\n");
        out.push_str("# to the market's instance; combined streams anywhere.\n");
        out.push_str("map $uri $tradsys_ws {\n");
        for i in 0..self.instances.len() {
            out.push_str(&format!("    \"~^/ws/{}\" {};\n", hint(i), upstream(i)));
        }
        for (m, spec) in specs.iter().enumerate() {
            let symbol = spec.symbol.to_ascii_lowercase();
            out.push_str(&format!(
                "    \"~^/ws/{symbol}@\" {};\n",
                upstream(self.market_instance(m))
            ));
        }
        out.push_str("    default tradsys_any;\n}\n\n");
        out.push_str(&NGINX_SERVER.replace("LISTEN", listen));
        out
    }
}

const NGINX_HEAD: &str = "\
# nginx in front of the tradsys instances of a cluster map, generated by
# `tradsys cluster nginx --cluster FILE [--markets FILE] [--listen ADDR]`;
# include it inside the http {} block. Any instance answers any request
# (it carries what it does not own to the owner through the links), so the
# routing below only saves that hop:
# - a signed request goes to the instance its API key names (the two
#   digits after the user id's twelve, written by the instance that made
#   the key);
# - a market data request to the instance of its symbol;
# - a stream of one market, or a user data stream, likewise;
# - everything else to the instance with the fewest connections.
#
# An instance that does not answer is left alone for 5 s after 3 failures
# (passive checks; nginx without Plus cannot poll /ready, and
# /admin/v1/cluster shows every instance's state). Requests that change
# nothing are retried once on another instance when the first fails or
# answers 502 or 503 (a starting instance answers 503); order entry never
# is: a request that reached an instance may have run there.
#
# The admin API has no route here; /metrics, /health and /ready are for
# the host's Prometheus and probes.

";

const NGINX_BY_KEY: &str = "\
# Signed requests: the instance named in the API key; a key without a
# known hint goes by symbol, then anywhere.
";

const NGINX_SERVER: &str = "\
# A WebSocket upgrade passes \"upgrade\"; anything else no Connection
# header, which keeps the connection to the instance open for reuse.
map $http_upgrade $tradsys_connection {
    default upgrade;
    \"\"      \"\";
}

server {
    listen LISTEN reuseport backlog=65535;
    server_name _;
    client_max_body_size 64k;
    access_log off;

    # Set here only: a location that set one header would drop the rest.
    # The instances apply per-IP limits and need the client's address.
    proxy_set_header X-Real-IP $remote_addr;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header Host $host;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $tradsys_connection;
    proxy_http_version 1.1;
    proxy_connect_timeout 2s;

    location /api/ {
        proxy_pass http://$tradsys_rest;
        proxy_read_timeout 30s;
        proxy_next_upstream error timeout http_502 http_503;
        proxy_next_upstream_tries 2;
    }

    # Order entry and everything that changes state: never sent twice.
    location ~ ^/api/v3/(order|orderList|openOrders|openOrderList|userDataStream|sor)(/|$) {
        proxy_pass http://$tradsys_rest;
        proxy_read_timeout 30s;
        proxy_next_upstream off;
    }

    location /ws {
        proxy_pass http://$tradsys_ws;
        proxy_read_timeout 3600s;
        proxy_send_timeout 3600s;
        proxy_buffering off;
    }

    location /stream {
        proxy_pass http://tradsys_any;
        proxy_read_timeout 3600s;
        proxy_send_timeout 3600s;
        proxy_buffering off;
    }

    location ~ ^/(admin|metrics|health|ready)(/|$) {
        return 404;
    }

    location / {
        return 404;
    }
}
";

/// The process's place, once the binary has read the map. Process-wide
/// on purpose: every `Trading` the process builds (a shard's, one replayed
/// at recovery, one replayed by the history store's catch-up) must hand
/// out the same user and order ids and the same keys for the same
/// records, and a value threaded through each would be one more place to
/// forget it. Set once, before anything is recovered.
static PROCESS_PLACE: std::sync::OnceLock<std::sync::Arc<Place>> = std::sync::OnceLock::new();

/// Makes `place` the process's; refused if it already has one.
pub fn set_process_place(place: std::sync::Arc<Place>) -> Result<(), String> {
    PROCESS_PLACE
        .set(place)
        .map_err(|_| "the process's place in the cluster is set once".to_string())
}

/// The process's place, when it is an instance of a cluster map.
pub fn process_place() -> Option<std::sync::Arc<Place>> {
    PROCESS_PLACE.get().cloned()
}

/// This process's place in a cluster: the map every instance reads and
/// which of its instances this one is.
#[derive(Debug)]
pub struct Place {
    pub map: ClusterMap,
    /// This instance's index in `map.instances`.
    pub me: usize,
    /// How many user slots it owns (0: it serves markets only).
    slots_owned: usize,
}

impl Place {
    /// Finds instance `id` in `map`.
    pub fn new(map: ClusterMap, id: &str) -> Result<Place, ClusterError> {
        match map.instances.iter().position(|i| i.id == id) {
            Some(me) => Ok(Place {
                slots_owned: map.slot_count(me),
                map,
                me,
            }),
            None => Err(invalid(format!(
                "no instance {id:?}; it names {}",
                map.instances
                    .iter()
                    .map(|i| i.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// A cluster of one instance works as a single host does; with more,
    /// the instances must share what spans them: rate limits in one Redis
    /// and the history in one PostgreSQL.
    pub fn check_shared(&self, redis: bool, postgres: bool) -> Result<(), ClusterError> {
        let missing: Vec<&str> = [
            (redis, "--redis (rate limits shared by every instance)"),
            (postgres, "--postgres (one history for every instance)"),
        ]
        .iter()
        .filter(|(given, _)| !given)
        .map(|(_, what)| *what)
        .collect();
        match (self.map.instances.len(), missing.is_empty()) {
            (1, _) | (_, true) => Ok(()),
            (n, false) => Err(invalid(format!("{n} instances need {}", missing.join(" and ")))),
        }
    }

    /// The PostgreSQL schema of this instance's history: `tradsys_` and
    /// its id, `-` as `_` (ids have no `_`, so no two instances share one).
    pub fn history_schema(&self) -> String {
        format!("tradsys_{}", self.instance().id.replace('-', "_"))
    }

    pub fn instance(&self) -> &Instance {
        &self.map.instances[self.me]
    }

    pub fn slots_owned(&self) -> usize {
        self.slots_owned
    }

    pub fn owns_user(&self, user: u64) -> bool {
        self.map.user_instance(user) == self.me
    }

    pub fn owns_market(&self, market: usize) -> bool {
        self.map.market_instance(market) == self.me
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARKETS: &str = include_str!("../shards/markets.toml");
    const MAP: &str = include_str!("../shards/cluster.toml");

    fn specs() -> Result<Vec<MarketSpec>, String> {
        tradsys_engine::market::parse_markets(MARKETS).map_err(|e| e.to_string())
    }

    fn map_with(instances: &str) -> Result<ClusterMap, ClusterError> {
        parse(instances, &specs().map_err(ClusterError::Syntax)?)
    }

    #[test]
    fn the_shipped_map_splits_the_slots_in_three_and_places_every_market() -> Result<(), String> {
        let specs = specs()?;
        let map = parse(MAP, &specs).map_err(|e| e.to_string())?;
        let ids: Vec<&str> = map.instances.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(
            map.summary(&specs),
            "instance a api 10.77.0.1:8080 link 10.77.0.1:9100: 5462 slots, markets BTCUSDT\n\
             instance b api 10.77.0.2:8080 link 10.77.0.2:9100: 5461 slots, markets ETHUSDT\n\
             instance c api 10.77.0.3:8080 link 10.77.0.3:9100: 5461 slots, markets ETHBTC,EURUSD\n"
        );
        Ok(())
    }

    #[test]
    fn a_users_slot_is_the_shards_hash_over_the_slot_count() -> Result<(), String> {
        let map = parse(MAP, &specs()?).map_err(|e| e.to_string())?;
        for user in [1_u64, 2, 1_000_003, u64::MAX] {
            let slot = ClusterMap::user_slot(user);
            assert_eq!(slot, tradsys_engine::account::owner_of(user, SLOTS));
            let owner = map.user_instance(user);
            assert!(map.instances[owner].slots.iter().any(|&(a, b)| (a..=b).contains(&slot)));
        }
        Ok(())
    }

    #[test]
    fn a_bad_map_is_refused_with_its_first_problem() {
        let one = |slots: &str, extra: &str| {
            format!(
                "[[instance]]\nid = \"a\"\napi = \"127.0.0.1:1\"\nlink = \"127.0.0.1:2\"\nslots = [{slots}]\n{extra}"
            )
        };
        let two = |a: &str, b: &str| {
            format!(
                "{}\n[[instance]]\nid = \"b\"\napi = \"127.0.0.1:3\"\nlink = \"127.0.0.1:4\"\nslots = [{b}]\n",
                one(a, "")
            )
        };
        let cases = [
            (one("\"0-16382\"", ""), "slot 16383 is owned by no instance"),
            (
                two("\"0-9000\"", "\"9000-16383\""),
                "slot 9000 is owned by \"a\" and \"b\"",
            ),
            (
                one("\"0-16384\"", ""),
                "instance \"a\": slots \"0-16384\": a range within 0-16383",
            ),
            (
                one("\"9-3\"", ""),
                "instance \"a\": slots \"9-3\": a range within 0-16383",
            ),
            (
                one("\"x\"", ""),
                "instance \"a\": slots \"x\": \"x\" is not a slot number",
            ),
            (
                one("\"0-16383\"", "markets = [\"DOGEUSDT\"]"),
                "instance \"a\" pins \"DOGEUSDT\", which the markets file does not list",
            ),
            (
                two("\"0-9000\"", "\"9001-16383\"").replace("127.0.0.1:3", "127.0.0.1:2"),
                "instances \"a\" and \"b\" share an id or an address",
            ),
            (
                one("\"0-16383\"", "").replace("127.0.0.1:2", "127.0.0.1:1"),
                "instance \"a\": the API and the link share 127.0.0.1:1",
            ),
            (
                one("\"0-16383\"", "").replace("127.0.0.1:1", "localhost:1"),
                "instance \"a\": api \"localhost:1\" is not an IP address and port",
            ),
            (
                one("\"0-16383\"", "").replace("id = \"a\"", "id = \"A b\""),
                "instance id \"A b\": 1 to 32 of a-z, 0-9 and -",
            ),
            ("instance = []".to_string(), "0 instances: between 1 and 64"),
        ];
        for (text, expected) in cases {
            assert_eq!(map_with(&text).err(), Some(invalid(expected.to_string())), "{text}");
        }
        let pinned_twice = two("\"0-9000\"", "\"9001-16383\"").replace(
            "slots = [\"9001-16383\"]",
            "slots = [\"9001-16383\"]\nmarkets = [\"BTCUSDT\"]",
        );
        let pinned_twice = pinned_twice.replacen(
            "slots = [\"0-9000\"]",
            "slots = [\"0-9000\"]\nmarkets = [\"BTCUSDT\"]",
            1,
        );
        assert_eq!(
            map_with(&pinned_twice).err(),
            Some(ClusterError::Invalid("BTCUSDT is pinned to \"a\" and \"b\"".into()))
        );
        assert!(matches!(map_with("[[instance]]\nid = 1"), Err(ClusterError::Syntax(_))));
    }
}
