//! Shards: one glommio executor per core, and everything that runs on it.
//!
//! `run` is the process's skeleton: it binds one SO_REUSEPORT listener per
//! shard in the main thread (so a bad address fails before any executor
//! starts), starts shard i pinned to the i-th allowed CPU, and turns
//! SIGTERM/SIGINT into a drain. A `Shard` is the state of one executor: it
//! is `!Send` and only its own tasks touch it; other shards reach it only
//! through the mesh. This module and `conn` are the only ones that know
//! glommio, so the executor could be swapped without touching the rest.

use crate::api::{ExchangeInfo, RATE_LIMITS_DEFAULT};
use crate::config::{Config, HttpLimits};
use crate::conn;
use crate::mesh::{Envelope, Mesh, MeshBuilders, MeshInbox, Request, Response, MESH_HANDLERS_MAX};
use crate::metrics::Metrics;
use glommio::net::{TcpListener, UnixStream};
use glommio::sync::{Gate, Semaphore};
use glommio::{LocalExecutorBuilder, Placement};
use std::cell::{Cell, Ref, RefCell, RefMut};
use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::Duration;
use tradsys_engine::market::MarketSpec;

/// Memory each executor registers with io_uring for storage I/O. Small:
/// network I/O does not use it, and locked memory is scarce (the limit is
/// often 8 MiB per process).
const SHARD_IO_MEMORY_BYTES: usize = 1 << 20;
/// Pending connections the kernel queues per listener.
const LISTEN_BACKLOG: i32 = 4096;
/// Read/write buffers a shard keeps for reuse.
const BUFFER_POOL_MAX: usize = 4096;

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("listen: cannot bind {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("shard {shard}: {problem}")]
    Shard { shard: usize, problem: String },
    #[error("signals: {0}")]
    Signals(std::io::Error),
}

/// One shard's state, reachable only from its executor.
pub struct Shard {
    index: usize,
    http: HttpLimits,
    connections_max: usize,
    metrics: RefCell<Metrics>,
    mesh: Mesh,
    exchange_info: ExchangeInfo,
    ready: Cell<bool>,
    draining: Cell<bool>,
    /// Never has permits: closing it wakes every connection waiting idle,
    /// which is how a drain reaches them.
    drain: Semaphore,
    pool: RefCell<Vec<Vec<u8>>>,
}

impl Shard {
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn http_limits(&self) -> &HttpLimits {
        &self.http
    }

    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    pub fn exchange_info(&self) -> &ExchangeInfo {
        &self.exchange_info
    }

    pub fn metrics(&self) -> Ref<'_, Metrics> {
        self.metrics.borrow()
    }

    pub fn metrics_mut(&self) -> RefMut<'_, Metrics> {
        self.metrics.borrow_mut()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.get()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// Resolves when the shard starts draining.
    pub async fn drained(&self) {
        // The semaphore never grants a permit; it only fails once closed.
        let _ = self.drain.acquire(1).await;
    }

    /// A cleared buffer with at least `capacity` bytes, reused if possible.
    pub fn take_buffer(&self, capacity: usize) -> Vec<u8> {
        match self.pool.borrow_mut().pop() {
            Some(mut buffer) => {
                buffer.reserve(capacity);
                buffer
            }
            None => Vec::with_capacity(capacity),
        }
    }

    /// Returns a buffer for reuse; oversized ones are freed so that one large
    /// request does not pin its memory forever.
    pub fn give_buffer(&self, mut buffer: Vec<u8>) {
        let mut pool = self.pool.borrow_mut();
        if buffer.capacity() <= conn::BUFFER_BYTES_POOLED_MAX && pool.len() < BUFFER_POOL_MAX {
            buffer.clear();
            pool.push(buffer);
        }
    }
}

/// Runs the server until SIGTERM/SIGINT; returns after a clean drain.
pub fn run(config: Config, markets: Vec<MarketSpec>) -> Result<(), ServerError> {
    let listeners = bind_listeners(config.listen, config.shards)?;
    let signals = block_signals().map_err(ServerError::Signals)?;
    let builders = MeshBuilders::new(config.shards, config.mesh_channel_capacity);
    let (exits_tx, exits_rx) = std::sync::mpsc::channel::<(usize, Result<(), String>)>();
    let mut controls = Vec::with_capacity(config.shards);
    let mut handles = Vec::with_capacity(config.shards);
    for (index, listener) in listeners.into_iter().enumerate() {
        let (control, shard_end) = std::os::unix::net::UnixStream::pair().map_err(ServerError::Signals)?;
        shard_end.set_nonblocking(true).map_err(ServerError::Signals)?;
        controls.push(control);
        let cpu = config.cpus[index];
        let setup = ShardSetup {
            index,
            cpu,
            listener_fd: listener.into_raw_fd(),
            control_fd: shard_end.into_raw_fd(),
            builders: builders.clone(),
            config: config.clone(),
            markets: markets.clone(),
        };
        let exits = exits_tx.clone();
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("shard-{index}"))
            .io_memory(SHARD_IO_MEMORY_BYTES)
            .spawn(move || async move {
                let result = run_shard(setup).await;
                let _ = exits.send((index, result));
            })
            .map_err(|e| ServerError::Shard {
                shard: index,
                problem: format!("cannot start its executor on core {cpu}: {e}"),
            })?;
        handles.push(handle);
    }
    drop(exits_tx);
    supervise(&signals, &mut controls, &exits_rx, config.shards)?;
    for handle in handles {
        let _ = handle.join();
    }
    Ok(())
}

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
        if !draining && wait_signal(signals, Duration::from_millis(100)) {
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
fn block_signals() -> std::io::Result<libc::sigset_t> {
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

fn wait_signal(set: &libc::sigset_t, timeout: Duration) -> bool {
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

struct ShardSetup {
    index: usize,
    cpu: usize,
    listener_fd: i32,
    control_fd: i32,
    builders: MeshBuilders,
    config: Config,
    markets: Vec<MarketSpec>,
}

async fn run_shard(setup: ShardSetup) -> Result<(), String> {
    // SAFETY: both fds were created for this shard and handed over whole.
    let listener = unsafe { TcpListener::from_raw_fd(setup.listener_fd) };
    let control = unsafe { UnixStream::from_raw_fd(setup.control_fd) };
    let (mesh, inbox) = setup.builders.join(setup.index).await?;
    let shard = Rc::new(Shard {
        index: setup.index,
        http: setup.config.http,
        connections_max: setup.config.connections_per_shard_max,
        metrics: RefCell::new(Metrics::default()),
        mesh,
        exchange_info: ExchangeInfo::new(&setup.markets, &RATE_LIMITS_DEFAULT),
        ready: Cell::new(false),
        draining: Cell::new(false),
        drain: Semaphore::new(0),
        pool: RefCell::new(Vec::new()),
    });
    let receivers = spawn_mesh_receivers(&shard, inbox);
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    println!("shard {} core {} listening {address}", setup.index, setup.cpu);
    shard.ready.set(true);
    let connections = Gate::new();
    let accepting = glommio::spawn_local(accept_loop(shard.clone(), listener, connections.clone()));
    wait_for_drain(control).await;
    shard.draining.set(true);
    shard.drain.close();
    // Dropping the accept task closes the listener: new connections go to
    // shards still listening, or are refused by the kernel.
    accepting.cancel().await;
    let deadline = setup.config.shutdown_timeout;
    let finished = futures_lite::future::or(
        async {
            let _ = connections.close().await;
            true
        },
        async {
            glommio::timer::sleep(deadline).await;
            false
        },
    )
    .await;
    if !finished {
        eprintln!(
            "shard {}: connections still open after {deadline:?}; closing them",
            setup.index
        );
    }
    shard.mesh().close();
    for receiver in receivers {
        receiver.cancel().await;
    }
    Ok(())
}

async fn wait_for_drain(mut control: UnixStream) {
    let mut byte = [0u8; 1];
    // Any outcome (a byte, EOF, an error) means the supervisor wants a drain.
    let _ = futures_lite::AsyncReadExt::read(&mut control, &mut byte).await;
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, connections: Gate) {
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                // Out of file descriptors or memory: back off instead of
                // spinning, and let open connections finish.
                eprintln!("shard {}: accept failed: {e}", shard.index);
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let open = shard.metrics().connections_open as usize;
        if open >= shard.connections_max {
            shard.metrics_mut().connections_refused += 1;
            drop(stream);
            continue;
        }
        {
            let mut m = shard.metrics_mut();
            m.connections_accepted += 1;
            m.connections_open += 1;
        }
        let shard = shard.clone();
        let spawned = connections.spawn(async move {
            conn::serve(&shard, stream).await;
            shard.metrics_mut().connections_open -= 1;
        });
        match spawned {
            Ok(task) => task.detach(),
            Err(_) => return,
        };
    }
}

/// Starts one receive loop per peer and mesh; returns their tasks.
fn spawn_mesh_receivers(shard: &Rc<Shard>, mut inbox: MeshInbox) -> Vec<glommio::Task<()>> {
    let handlers = Rc::new(Semaphore::new(MESH_HANDLERS_MAX));
    let mut tasks = Vec::new();
    for (peer, receiver) in inbox.requests.streams() {
        let shard = shard.clone();
        let handlers = handlers.clone();
        tasks.push(glommio::spawn_local(async move {
            while let Some(envelope) = receiver.recv().await {
                let Ok(permit) = handlers.acquire_static_permit(1).await else {
                    return;
                };
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    handle_request(&shard, peer, envelope).await;
                    drop(permit);
                })
                .detach();
            }
        }));
    }
    for (_, receiver) in inbox.responses.streams() {
        let shard = shard.clone();
        tasks.push(glommio::spawn_local(async move {
            while let Some(envelope) = receiver.recv().await {
                shard.mesh.complete(envelope);
            }
        }));
    }
    tasks
}

async fn handle_request(shard: &Shard, from: usize, envelope: Envelope<Request>) {
    shard.metrics_mut().mesh_received += 1;
    let response = match envelope.body {
        Request::Metrics => Response::Metrics(Box::new(shard.metrics().snapshot(shard.index))),
    };
    shard.metrics_mut().mesh_sent += 1;
    // The peer may be shutting down; its caller then sees PeerGone.
    let _ = shard.mesh.respond(from, envelope.id, response).await;
}
