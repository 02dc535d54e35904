//! The server: executors, start-up and signals, the mesh, dispatch and the
//! HTTP and WebSocket connections.

pub mod conn;
pub mod mesh;
pub mod shard;
pub mod wsconn;
