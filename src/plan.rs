//! The capacity model: how many hosts a load needs, computed from figures
//! measured on this code (`tradsys plan`, docs/capacity.md).
//!
//! The model charges every request the CPU time the benchmarks measured
//! per core: a read (`bench/link.sh`, answered where it arrives), an order
//! whose user and market share an instance, and an order whose market is
//! on another instance (`bench/cluster_orders.sh`, both sides' time
//! together). With users spread over N instances by hash slot and markets
//! by symbol, an order's market is on another instance than its user with
//! probability (N − 1) / N, so each host added also makes the average
//! order dearer. Hosts run at a chosen share of what they can answer, the
//! room left for bursts and the latency tail. WebSocket connections are
//! charged their measured memory (server and kernel).
//!
//! Everything is integer arithmetic: rates per second, shares per mille,
//! costs in nanoseconds of one core.
//!
//! What the model leaves out, on purpose: the memory of users (not
//! measured; a shard holds at most `USERS_PER_SHARD_MAX` users), Redis's
//! and PostgreSQL's own capacity (the benchmarks ran them on the same
//! cores, so their cost is inside the per-core figures), and the network.

use serde::Deserialize;

/// Hosts the search tries before it gives up.
const HOSTS_MAX: u64 = 10_000;

/// The measured figures and the targets (`bench/capacity.toml`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Figures {
    pub measured: Measured,
    pub host: Host,
    pub target: Vec<Target>,
}

/// What the benchmarks measured, per core of the machine they ran on.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measured {
    pub machine: String,
    pub date: String,
    pub orders_local_per_core: u64,
    pub orders_across_per_core: u64,
    pub reads_per_core: u64,
    pub websocket_bytes: u64,
}

/// The hosts the plan is made of.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub cores: u64,
    pub memory_gib: u64,
    /// The share of its capacity a host runs at, per mille.
    pub utilisation_per_mille: u64,
}

/// One load to plan for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub name: String,
    pub requests_per_s: u64,
    /// The share of requests that are orders (the rest reads), per mille.
    pub order_share_per_mille: u64,
    pub websocket_connections: u64,
}

/// What one target needs.
#[derive(Debug, PartialEq, Eq)]
pub struct Need {
    pub hosts: u64,
    /// Orders whose market is on another instance, per mille.
    pub across_per_mille: u64,
    /// Requests per second those hosts answer at the chosen utilisation.
    pub capacity_per_s: u64,
}

/// Why figures cannot be planned with.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Syntax(String),
    #[error("{0} must be above zero")]
    Zero(&'static str),
    #[error("{0} is a share per mille: at most 1000")]
    Share(&'static str),
    #[error("target {0:?} needs more than {HOSTS_MAX} hosts")]
    TooLarge(String),
}

pub fn parse(text: &str) -> Result<Figures, PlanError> {
    let figures: Figures = toml::from_str(text).map_err(|e| PlanError::Syntax(e.message().to_string()))?;
    let m = &figures.measured;
    for (name, value) in [
        ("orders_local_per_core", m.orders_local_per_core),
        ("orders_across_per_core", m.orders_across_per_core),
        ("reads_per_core", m.reads_per_core),
        ("cores", figures.host.cores),
        ("memory_gib", figures.host.memory_gib),
        ("utilisation_per_mille", figures.host.utilisation_per_mille),
    ] {
        if value == 0 {
            return Err(PlanError::Zero(name));
        }
    }
    if figures.host.utilisation_per_mille > 1000 {
        return Err(PlanError::Share("utilisation_per_mille"));
    }
    if figures.target.iter().any(|t| t.order_share_per_mille > 1000) {
        return Err(PlanError::Share("order_share_per_mille"));
    }
    Ok(figures)
}

/// Nanoseconds of one core per operation at `per_core` operations/s.
fn cost_ns(per_core: u64) -> u128 {
    1_000_000_000 / u128::from(per_core)
}

/// The fewest hosts that answer `target` at the hosts' utilisation and
/// hold its connections.
pub fn need(figures: &Figures, target: &Target) -> Result<Need, PlanError> {
    let m = &figures.measured;
    let host = &figures.host;
    let (local, across, read) = (
        cost_ns(m.orders_local_per_core),
        cost_ns(m.orders_across_per_core),
        cost_ns(m.reads_per_core),
    );
    let memory_bytes = u128::from(host.memory_gib) << 30;
    for hosts in 1..=HOSTS_MAX {
        let across_per_mille = (hosts - 1) * 1000 / hosts;
        let x = u128::from(across_per_mille);
        let order = ((1000 - x) * local + x * across) / 1000;
        let share = u128::from(target.order_share_per_mille);
        // Core nanoseconds one request costs on average.
        let cost = (share * order + (1000 - share) * read) / 1000;
        let budget_ns = u128::from(hosts * host.cores) * 1_000_000_000 * u128::from(host.utilisation_per_mille) / 1000;
        let capacity_per_s = (budget_ns / cost.max(1)) as u64;
        let connections_fit = u128::from(target.websocket_connections) * u128::from(m.websocket_bytes)
            <= u128::from(hosts) * memory_bytes * u128::from(host.utilisation_per_mille) / 1000;
        if capacity_per_s >= target.requests_per_s && connections_fit {
            return Ok(Need {
                hosts,
                across_per_mille,
                capacity_per_s,
            });
        }
    }
    Err(PlanError::TooLarge(target.name.clone()))
}

/// `tradsys plan`'s report: the figures, then a line per target.
pub fn report(figures: &Figures, source: &str) -> Result<String, PlanError> {
    let m = &figures.measured;
    let h = &figures.host;
    let mut out = format!(
        "tradsys plan: figures from {source}, measured {} on {}\n\
         per core: {} orders/s with user and market on one instance, {} orders/s across instances, {} reads/s; \
         {} bytes per WebSocket connection\n\
         host: {} cores, {} GiB, run at {} per mille of capacity\n\n\
         | target | requests/s | orders | WebSocket connections | hosts | cores | orders across instances | capacity, requests/s |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
        m.date,
        m.machine,
        m.orders_local_per_core,
        m.orders_across_per_core,
        m.reads_per_core,
        m.websocket_bytes,
        h.cores,
        h.memory_gib,
        h.utilisation_per_mille,
    );
    for target in &figures.target {
        let need = need(figures, target)?;
        out.push_str(&format!(
            "| {} | {} | {} ‰ | {} | {} | {} | {} ‰ | {} |\n",
            target.name,
            target.requests_per_s,
            target.order_share_per_mille,
            target.websocket_connections,
            need.hosts,
            need.hosts * h.cores,
            need.across_per_mille,
            need.capacity_per_s
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIGURES: &str = r#"
[measured]
machine = "test"
date = "2026-12-07"
orders_local_per_core = 10000
orders_across_per_core = 2500
reads_per_core = 50000
websocket_bytes = 10000

[host]
cores = 10
memory_gib = 1
utilisation_per_mille = 500

[[target]]
name = "small"
requests_per_s = 40000
order_share_per_mille = 1000
websocket_connections = 0
"#;

    fn target(requests_per_s: u64, orders: u64, connections: u64) -> Target {
        Target {
            name: "t".into(),
            requests_per_s,
            order_share_per_mille: orders,
            websocket_connections: connections,
        }
    }

    #[test]
    fn one_host_runs_every_order_locally() -> Result<(), PlanError> {
        let figures = parse(FIGURES)?;
        // 10 cores at half of 10,000 orders/s each: 50,000 orders/s.
        assert_eq!(
            need(&figures, &figures.target[0]),
            Ok(Need {
                hosts: 1,
                across_per_mille: 0,
                capacity_per_s: 50_000
            })
        );
        Ok(())
    }

    #[test]
    fn each_host_added_makes_the_average_order_dearer() -> Result<(), PlanError> {
        let figures = parse(FIGURES)?;
        // An order costs 100 µs of core time on one instance and 400 µs
        // across two: one host answers 50,000 orders/s, two 40,000 (half
        // their orders across), three 50,033, four 61,538 (three
        // quarters across: 325 µs on average, 40 cores at half).
        assert_eq!(
            need(&figures, &target(55_000, 1000, 0)),
            Ok(Need {
                hosts: 4,
                across_per_mille: 750,
                capacity_per_s: 61_538
            })
        );
        // Reads never cross: 100 hosts answer 100 times one host's reads.
        let reads = need(&figures, &target(25_000_000, 0, 0))?;
        assert_eq!((reads.hosts, reads.capacity_per_s), (100, 25_000_000));
        Ok(())
    }

    #[test]
    fn connections_need_memory() -> Result<(), PlanError> {
        let figures = parse(FIGURES)?;
        // Half of 1 GiB holds 53,687 connections of 10,000 bytes.
        assert_eq!(need(&figures, &target(1, 0, 53_687)).map(|n| n.hosts), Ok(1));
        assert_eq!(need(&figures, &target(1, 0, 53_688)).map(|n| n.hosts), Ok(2));
        Ok(())
    }

    #[test]
    fn bad_figures_are_refused() -> Result<(), PlanError> {
        assert_eq!(
            parse(&FIGURES.replace("reads_per_core = 50000", "reads_per_core = 0")).err(),
            Some(PlanError::Zero("reads_per_core"))
        );
        assert_eq!(
            parse(&FIGURES.replace("utilisation_per_mille = 500", "utilisation_per_mille = 1001")).err(),
            Some(PlanError::Share("utilisation_per_mille"))
        );
        assert!(matches!(parse("[measured]"), Err(PlanError::Syntax(_))));
        let figures = parse(FIGURES)?;
        assert_eq!(
            need(&figures, &target(u64::MAX, 0, 0)).err(),
            Some(PlanError::TooLarge("t".into()))
        );
        Ok(())
    }
}
