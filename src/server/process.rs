//! The process: binds every listener in the main thread (so a bad address
//! fails before any executor starts), starts shard i pinned to the i-th
//! allowed CPU, recovers the state and hands each shard its part, starts
//! the snapshot thread, and turns SIGTERM/SIGINT into a drain of every
//! shard.

use crate::config::{Config, DurabilityMode, HistoryEngine};
use crate::durability::epoch::Epochs;
use crate::durability::recovery::{self, RecoveryError, TapMaker};
use crate::durability::snapshot;
use crate::durability::snapshotter::Snapshotter;
use crate::server::history::RecoveryTaps;
use crate::server::mesh::MeshBuilders;
use crate::server::owner;
use crate::server::start::{run_shard, Readiness, ShardSetup, ShardStart};
use glommio::{LocalExecutorBuilder, Placement};
use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::IntoRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tradsys_engine::market::MarketSpec;

/// Memory each executor registers with io_uring for storage I/O. Small:
/// network I/O does not use it, and locked memory is scarce (the limit is
/// often 8 MiB per process).
pub(crate) const SHARD_IO_MEMORY_BYTES: usize = 1 << 20;
/// Pending connections the kernel queues per listener.
const LISTEN_BACKLOG: i32 = 4096;
/// How often the supervisor looks for a signal.
const SIGNAL_POLL_INTERVAL_MS: u64 = 100;

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("listen: cannot bind {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("shard {shard}: {problem}")]
    Shard { shard: usize, problem: String },
    #[error("signals: {0}")]
    Signals(std::io::Error),
    #[error("recovery: {0}")]
    Recovery(#[from] RecoveryError),
    #[error("data directory {}: {source}", dir.display())]
    DataDir {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {} is in use by process {holder}: one process per data directory", dir.display())]
    DataDirInUse { dir: std::path::PathBuf, holder: String },
    #[error("listen: {addr} is in use by another process; a second instance would split its clients (stop it first)")]
    AddressInUse { addr: SocketAddr },
}

impl ServerError {
    /// The process's exit code for this error: 2 when the start was
    /// refused because the data directory is another process's, 1 for
    /// everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            ServerError::DataDirInUse { .. } => 2,
            _ => 1,
        }
    }
}

pub fn run(mut config: Config, markets: Vec<MarketSpec>) -> Result<(), ServerError> {
    if config.durability.mode == DurabilityMode::None && config.history.engine != HistoryEngine::Off {
        println!("history store off: --durability none journals nothing to write behind");
        config.history.engine = HistoryEngine::Off;
    }
    // Before anything reads the directory or joins a listening group.
    let _owner = owner::lock_data_dir(&config.data_dir)?;
    if let Some(syncs) = config.test_fail_sync_after {
        crate::journal::faults::fail_syncs_after(syncs);
    }
    if let Some(files) = config.test_fail_snapshot_writes_after {
        crate::journal::faults::fail_snapshot_writes_after(files);
    }
    let listeners = bind_listeners(config.listen, config.shards)?;
    if let Some(place) = &config.place {
        let instances = place.map.instances.len();
        println!("cluster: {} of {instances}", place.map.describe(place.me, &markets));
    }
    let mut admin_listeners = bind_admin_listeners(&config)?;
    let signals = block_signals().map_err(ServerError::Signals)?;
    let builders = MeshBuilders::new(config.shards, config.mesh_channel_capacity);
    let epochs = Arc::new(Epochs::new(config.shards));
    if config.history.engine != HistoryEngine::Off {
        // No snapshot passes what the store has until the writers say so.
        for shard in 0..config.shards {
            epochs.set_absorbed(shard, 0);
        }
    }
    let readiness = Arc::new(Readiness::new(config.shards));
    let mut starts = Vec::with_capacity(config.shards);
    let (exits_tx, exits_rx) = std::sync::mpsc::channel::<(usize, Result<(), String>)>();
    let mut controls = Vec::with_capacity(config.shards);
    let mut handles = Vec::with_capacity(config.shards);
    for (index, listener) in listeners.into_iter().enumerate() {
        let (control, shard_end) = std::os::unix::net::UnixStream::pair().map_err(ServerError::Signals)?;
        shard_end.set_nonblocking(true).map_err(ServerError::Signals)?;
        controls.push(control);
        let cpu = config.cpus[index];
        let (start_tx, start) = std::sync::mpsc::channel();
        starts.push(start_tx);
        let setup = ShardSetup {
            start,
            epochs: epochs.clone(),
            readiness: readiness.clone(),
            index,
            cpu,
            listener_fd: listener.into_raw_fd(),
            admin_fd: admin_listeners[index].take().map(IntoRawFd::into_raw_fd),
            control_fd: shard_end.into_raw_fd(),
            builders: builders.clone(),
            config: config.clone(),
            markets: markets.clone(),
        };
        handles.push(spawn_executor(setup, config.shard_spin_us, exits_tx.clone())?);
    }
    drop(exits_tx);
    let snapshots = start_shards(&config, &markets, starts, &epochs)?;
    let supervised = supervise(&signals, &mut controls, &exits_rx, config.shards);
    if let Some((stop, thread)) = snapshots {
        stop.store(true, Ordering::Release);
        let _ = thread.join();
    }
    supervised?;
    for handle in handles {
        let _ = handle.join();
    }
    Ok(())
}

/// The admin listeners, one per shard, or none without an admin token.
fn bind_admin_listeners(config: &Config) -> Result<Vec<Option<socket2::Socket>>, ServerError> {
    if config.admin_token.is_none() {
        println!("admin API off: no admin token (set --admin-token or TRADSYS_ADMIN_TOKEN)");
        return Ok((0..config.shards).map(|_| None).collect());
    }
    let listeners = bind_listeners(config.admin_listen, config.shards)?;
    Ok(listeners.into_iter().map(Some).collect())
}

/// Starts shard `setup.index`'s executor pinned to its CPU; the shard's
/// result goes to `exits` when it ends.
fn spawn_executor(
    setup: ShardSetup,
    spin_us: u64,
    exits: std::sync::mpsc::Sender<(usize, Result<(), String>)>,
) -> Result<glommio::ExecutorJoinHandle<()>, ServerError> {
    let (index, cpu) = (setup.index, setup.cpu);
    let mut builder = LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .name(&format!("shard-{index}"))
        .io_memory(SHARD_IO_MEMORY_BYTES);
    if spin_us > 0 {
        builder = builder.spin_before_park(Duration::from_micros(spin_us));
    }
    builder
        .spawn(move || async move {
            let result = run_shard(setup).await;
            let _ = exits.send((index, result));
        })
        .map_err(|e| ServerError::Shard {
            shard: index,
            problem: format!("cannot start its executor on core {cpu}: {e}"),
        })
}

/// Recovers the state (while the shards answer /ready with 503), hands
/// each shard its part and starts the snapshot thread.
fn start_shards(
    config: &Config,
    markets: &[MarketSpec],
    starts: Vec<std::sync::mpsc::Sender<ShardStart>>,
    epochs: &Arc<Epochs>,
) -> Result<Option<SnapshotHandle>, ServerError> {
    if config.durability.mode == DurabilityMode::None {
        println!("WARNING: --durability none: nothing is journaled; all state is lost when the process stops");
        for start in starts {
            let _ = start.send(ShardStart {
                image: None,
                generation: 0,
                fresh: true,
            });
        }
        return Ok(None);
    }
    let shards = config.shards as u32;
    let recovered = recover(config, shards, markets)?;
    let report = &recovered.report;
    for warning in &report.warnings {
        eprintln!("WARNING: {warning}");
    }
    if !recovered.fresh {
        println!(
            "recovered {} records from {} shard(s) up to epoch {} and redelivered {} messages in {:.3} s ({:.3} s with the new snapshots)",
            report.records_replayed,
            report.shards_before,
            report.cut,
            report.messages_redelivered,
            report.replay_time.as_secs_f64(),
            report.total_time.as_secs_f64(),
        );
    }
    let generation = recovered.generation;
    for (start, image) in starts.into_iter().zip(recovered.images) {
        let _ = start.send(ShardStart {
            image: Some(image),
            generation,
            fresh: recovered.fresh,
        });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let snapshots = Snapshotter {
        data_dir: config.data_dir.clone(),
        generation,
        shards,
        markets: markets.to_vec(),
        epochs: epochs.clone(),
        records: config.durability.snapshot_records,
        interval_s: config.durability.snapshot_interval_s,
        stop: stop.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("snapshots".into())
        .spawn(move || snapshots.run())
        .map_err(|e| ServerError::Shard {
            shard: 0,
            problem: format!("cannot start the snapshot thread: {e}"),
        })?;
    Ok(Some((stop, thread)))
}

/// Recovery, with the history store absorbing the rows of the records it
/// lacked before the old generation goes (see `server::history`).
fn recover(config: &Config, shards: u32, markets: &[MarketSpec]) -> Result<recovery::Recovered, ServerError> {
    let failed = |problem: String| ServerError::Shard { shard: 0, problem };
    if config.history.engine == HistoryEngine::Off {
        return Ok(recovery::recover(&config.data_dir, shards, markets)?);
    }
    let Some((generation, before)) = snapshot::read_current(&config.data_dir).map_err(RecoveryError::from)? else {
        match crate::server::history::migrate(config) {
            Ok(_) => crate::server::history::check_unused(config).map_err(failed)?,
            Err(e) if matches!(config.history.engine, HistoryEngine::Postgres(_)) => {
                eprintln!("WARNING: history store: {e}; the writers migrate once it answers")
            }
            Err(e) => return Err(failed(format!("history store: {e}"))),
        }
        return Ok(recovery::recover(&config.data_dir, shards, markets)?);
    };
    let taps = RecoveryTaps::new(config, before).map_err(failed)?;
    let maker = |g: u64, s: u32| taps.tap(g, s);
    let maker: &TapMaker<'_> = &maker;
    let mut write = |_: Vec<Box<dyn crate::durability::image::Tap>>| {
        let rows = taps.write_recovered(config, generation)?;
        if rows > 0 {
            println!("history store: wrote {rows} rows of records it did not have");
        }
        Ok(())
    };
    Ok(recovery::recover_with(
        &config.data_dir,
        shards,
        markets,
        Some(maker),
        &mut write,
    )?)
}

/// The snapshot thread's stop flag and handle.
type SnapshotHandle = (Arc<AtomicBool>, std::thread::JoinHandle<()>);

/// Waits for a signal or a shard's exit. A signal starts the drain on every
/// shard; a second signal is ignored (the drain is already bounded).
fn supervise(
    signals: &libc::sigset_t,
    controls: &mut [std::os::unix::net::UnixStream],
    exits: &std::sync::mpsc::Receiver<(usize, Result<(), String>)>,
    shards: usize,
) -> Result<(), ServerError> {
    let mut exited = 0;
    let mut draining = false;
    while exited < shards {
        if !draining && wait_signal(signals, Duration::from_millis(SIGNAL_POLL_INTERVAL_MS)) {
            draining = true;
            for control in controls.iter_mut() {
                // A shard that already ended has closed its end; that is fine.
                let _ = control.write_all(b"d");
            }
        }
        if draining {
            std::thread::sleep(Duration::from_millis(1));
        }
        while let Ok((shard, result)) = exits.try_recv() {
            exited += 1;
            if let Err(problem) = result {
                return Err(ServerError::Shard { shard, problem });
            }
            if !draining {
                return Err(ServerError::Shard {
                    shard,
                    problem: "stopped unexpectedly".into(),
                });
            }
        }
    }
    Ok(())
}

/// Blocks SIGINT and SIGTERM in this thread and every thread it starts, so
/// that only `wait_signal` receives them.
pub(crate) fn block_signals() -> std::io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data initialised by sigemptyset; the calls
    // only read and write the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        Ok(set)
    }
}

pub(crate) fn wait_signal(set: &libc::sigset_t, timeout: Duration) -> bool {
    let spec = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` is a valid signal set and `spec` a valid timespec.
    unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &spec) > 0 }
}

/// Binds one listener per shard on the same address with SO_REUSEPORT. With
/// port 0 the first bind picks the port and the others reuse it.
fn bind_listeners(addr: SocketAddr, shards: usize) -> Result<Vec<socket2::Socket>, ServerError> {
    owner::check_address_free(addr)?;
    let mut listeners = Vec::with_capacity(shards);
    let mut addr = addr;
    for _ in 0..shards {
        let bind_error = |source| ServerError::Bind { addr, source };
        let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)
            .map_err(bind_error)?;
        socket.set_reuse_port(true).map_err(bind_error)?;
        socket.set_reuse_address(true).map_err(bind_error)?;
        socket.bind(&addr.into()).map_err(bind_error)?;
        socket.listen(LISTEN_BACKLOG).map_err(bind_error)?;
        if addr.port() == 0 {
            addr = socket
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .ok_or_else(|| bind_error(std::io::Error::other("no local address")))?;
        }
        listeners.push(socket);
    }
    Ok(listeners)
}
