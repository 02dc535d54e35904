//! The `tradsys` binary: reads the configuration and runs the shards.
//!
//! Exit codes: 0 after a clean shutdown, 1 when the server fails at run
//! time (the address is taken, a shard dies), 2 for invalid configuration
//! and for a data directory another process owns, 70 after a panic, 74
//! when the journal cannot be written.

use std::collections::BTreeMap;
use std::process::ExitCode;
use tradsys::config::{self, Command};

/// The exit code after a panic (EX_SOFTWARE).
const EXIT_PANICKED: i32 = 70;

fn main() -> ExitCode {
    stop_on_panic();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env: BTreeMap<String, String> = std::env::vars().filter(|(k, _)| k.starts_with("TRADSYS_")).collect();
    let config = match config::load(&args, &env) {
        Ok(Command::Serve(config)) => *config,
        Ok(Command::Migrate(config)) => {
            return match tradsys::server::migrate(&config) {
                Ok(report) => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("tradsys migrate: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Ok(Command::Worker(config)) => {
            return match tradsys::server::run_worker_process(*config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tradsys worker: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Ok(Command::ClusterCheck { cluster, markets }) => return cluster_check(&cluster, &markets, None),
        Ok(Command::ClusterNginx {
            cluster,
            markets,
            listen,
        }) => return cluster_check(&cluster, &markets, Some(&listen)),
        Ok(Command::Plan { figures }) => return plan(&figures),
        Ok(Command::Help) => {
            print!("{}", config::help());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("tradsys {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => return invalid_config(&e.to_string()),
    };
    let markets = match std::fs::read_to_string(&config.markets) {
        Ok(text) => match tradsys_engine::market::parse_markets(&text) {
            Ok(markets) => markets,
            Err(e) => return invalid_config(&format!("markets: {}: {e}", config.markets.display())),
        },
        Err(e) => return invalid_config(&format!("markets: {}: {e}", config.markets.display())),
    };
    for market in &markets {
        if let Some(shard) = market.shard.filter(|&s| s as usize >= config.shards) {
            let problem = format!(
                "markets: market {}: shard: {shard} is not below --shards {}",
                market.symbol, config.shards
            );
            return invalid_config(&problem);
        }
    }
    let mut config = config;
    if let Some((path, id)) = &config.cluster {
        match place(path, id, &config, &markets) {
            Ok(place) => {
                if let Err(e) = history_schema(&mut config, &place.history_schema()) {
                    return invalid_config(&e);
                }
                config.redis.cluster_instances = place.map.instances.len() as u32;
                let place = std::sync::Arc::new(place);
                if let Err(e) = tradsys::cluster::set_process_place(place.clone()) {
                    return invalid_config(&e);
                }
                config.place = Some(place);
            }
            Err(e) => return invalid_config(&format!("cluster: {}: {e}", path.display())),
        }
    }
    match tradsys::server::run(config, markets) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tradsys: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn invalid_config(problem: &str) -> ExitCode {
    eprintln!("tradsys: invalid configuration: {problem}");
    ExitCode::from(2)
}

/// A panic anywhere stops the process, after the usual message: a shard
/// whose thread died would otherwise leave the others serving without it,
/// and the process would never stop (the drain waits for every shard).
/// What was acknowledged is in the journal, as after `kill -9`.
fn stop_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        eprintln!("tradsys: a thread panicked; stopping (the journal holds everything acknowledged)");
        std::process::exit(EXIT_PANICKED);
    }));
}

/// `tradsys plan`: the capacity model's report, or why the figures cannot
/// be used (exit code 2).
fn plan(figures: &std::path::Path) -> ExitCode {
    let report = std::fs::read_to_string(figures)
        .map_err(|e| format!("{}: {e}", figures.display()))
        .and_then(|text| tradsys::plan::parse(&text).map_err(|e| format!("{}: {e}", figures.display())))
        .and_then(|parsed| tradsys::plan::report(&parsed, &figures.display().to_string()).map_err(|e| e.to_string()));
    match report {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tradsys plan: {e}");
            ExitCode::from(2)
        }
    }
}

/// This instance's place in the cluster map at `path`.
fn place(
    path: &std::path::Path,
    id: &str,
    config: &config::Config,
    markets: &[tradsys_engine::market::MarketSpec],
) -> Result<tradsys::cluster::Place, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let map = tradsys::cluster::parse(&text, markets).map_err(|e| e.to_string())?;
    let place = tradsys::cluster::Place::new(map, id).map_err(|e| e.to_string())?;
    let postgres = matches!(config.history.engine, config::HistoryEngine::Postgres(_));
    place
        .check_shared(config.redis.url.is_some(), postgres)
        .map_err(|e| e.to_string())?;
    Ok(place)
}

/// Puts this instance's history in a schema of its own of the PostgreSQL
/// every instance shares (its replicas too).
fn history_schema(config: &mut config::Config, schema: &str) -> Result<(), String> {
    use tradsys::store::postgres::with_search_path;
    if let config::HistoryEngine::Postgres(url) = &config.history.engine {
        let url = with_search_path(url, schema).map_err(|e| format!("postgres: {e}"))?;
        config.history.engine = config::HistoryEngine::Postgres(url);
    }
    for replica in &mut config.history.replicas {
        *replica = with_search_path(replica, schema).map_err(|e| format!("postgres_replica: {e}"))?;
    }
    Ok(())
}

/// `tradsys cluster check`: who owns what, or the map's first problem
/// (exit code 2, as for any invalid configuration); with `nginx_listen`
/// (`tradsys cluster nginx`), an nginx front for the map instead.
fn cluster_check(cluster: &std::path::Path, markets: &std::path::Path, nginx_listen: Option<&str>) -> ExitCode {
    let read = |path: &std::path::Path| std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()));
    let specs = read(markets).and_then(|text| {
        tradsys_engine::market::parse_markets(&text).map_err(|e| format!("{}: {e}", markets.display()))
    });
    let checked = specs.and_then(|specs| {
        let map = read(cluster)?;
        let map = tradsys::cluster::parse(&map, &specs).map_err(|e| format!("{}: {e}", cluster.display()))?;
        Ok(match nginx_listen {
            Some(listen) => map.nginx(&specs, listen),
            None => map.summary(&specs),
        })
    });
    match checked {
        Ok(summary) => {
            print!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => invalid_config(&e),
    }
}
