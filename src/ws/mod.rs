//! WebSocket (RFC 6455) for the stream API, without I/O: the opening
//! handshake ([`handshake`]). The connection loop on a shard owns the
//! socket; this module never reads a clock or a socket.

pub mod handshake;
