//! The server: the only layer that runs executors and sockets. Process
//! start-up and signals (`process`), each shard's life (`start`), its
//! state (`shard`), the mesh between shards and its messages (`mesh`),
//! what arrives on it (`dispatch`), stream publishing (`publish`),
//! admission (`admission`), the HTTP and WebSocket connections
//! (`conn`, `wsconn`), the history store's writers and start-up
//! (`history`), and the links to the other instances of a cluster
//! (`link`).

mod admission;
pub(crate) mod conn;
mod dispatch;
mod history;
mod jobs;
mod link;
pub(crate) mod mesh;
mod owner;
mod process;
mod publish;
pub(crate) mod shard;
mod start;
mod wsapi;
mod wsconn;

pub use history::migrate;
pub use jobs::run_worker_process;
pub use process::{run, ServerError};
