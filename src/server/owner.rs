//! One process per data directory and per listening address.
//!
//! Two processes on one data directory would both write its journals, and
//! a second process on a port another already listens on would join its
//! SO_REUSEPORT group and take half of its new connections into a second,
//! separate exchange. Both are refused at start, each with one line:
//!
//! * the data directory is owned through an exclusive `flock` on
//!   `<data_dir>/tradsys.lock`, taken before recovery reads anything and
//!   held until the process ends (the kernel drops it with the process,
//!   so a `kill -9` leaves nothing to clean up); the file holds the
//!   owner's pid for the refusal's message;
//! * before its listeners join a reuse-port group, the process looks for
//!   a socket listening on the address in the kernel's table
//!   (`/proc/net/tcp`, `tcp6`). Only a listener counts: the connections an
//!   earlier, killed process accepted linger for up to a minute
//!   (TIME_WAIT, FIN_WAIT) and must not stop its restart. Without `/proc`
//!   the process binds the address once without SO_REUSEPORT instead,
//!   which those lingering sockets may refuse too.
//!
//! A handover to a new process on the same port (`--takeover`) belongs to
//! zero-downtime restarts and is not built: until then the start is
//! refused.

use super::process::ServerError;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::Path;

/// The lock file in a data directory.
pub const LOCK_FILE: &str = "tradsys.lock";

/// The data directory's lock; released when dropped (or when the process
/// ends, however).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Takes `dir`'s lock, creating the directory if needed; refused while
/// another process holds it.
pub fn lock_data_dir(dir: &Path) -> Result<DataDirLock, ServerError> {
    let io = |source: std::io::Error| ServerError::DataDir {
        dir: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK_FILE))
        .map_err(io)?;
    // SAFETY: a valid, open file descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::WouldBlock {
            return Err(io(error));
        }
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        return Err(ServerError::DataDirInUse {
            dir: dir.to_path_buf(),
            holder: if holder.is_empty() {
                "unknown".into()
            } else {
                holder.into()
            },
        });
    }
    file.set_len(0).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(DataDirLock { _file: file })
}

/// How long a start waits for a listener on its address to go before it
/// refuses the address, and how often it looks.
const LISTENER_GONE_WAIT_MS: u64 = 5_000;
const LISTENER_GONE_POLL_MS: u64 = 50;

/// Refuses `addr` while another socket listens on it (port 0 picks a free
/// port and needs no check).
pub fn check_address_free(addr: SocketAddr) -> Result<(), ServerError> {
    if addr.port() == 0 {
        return Ok(());
    }
    // A process killed a moment ago may still hold its listener: the
    // kernel releases what its io_uring rings held after the process is
    // gone. Wait that out, a bounded time, before refusing.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(LISTENER_GONE_WAIT_MS);
    while let Some(listening) = listener_in_kernel_table(addr) {
        if !listening {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(ServerError::AddressInUse { addr });
        }
        std::thread::sleep(std::time::Duration::from_millis(LISTENER_GONE_POLL_MS));
    }
    let bind_error = |source| ServerError::Bind { addr, source };
    let probe =
        socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None).map_err(bind_error)?;
    probe.set_reuse_address(true).map_err(bind_error)?;
    match probe.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(ServerError::AddressInUse { addr }),
        Err(e) => Err(bind_error(e)),
    }
}

/// Whether the kernel's TCP tables list a listener on `addr`'s port at
/// its address or at the wildcard of its family; `None` when they cannot
/// be read.
fn listener_in_kernel_table(addr: SocketAddr) -> Option<bool> {
    let (table, wildcard) = match addr {
        SocketAddr::V4(_) => ("/proc/net/tcp", "00000000"),
        SocketAddr::V6(_) => ("/proc/net/tcp6", "00000000000000000000000000000000"),
    };
    let text = std::fs::read_to_string(table).ok()?;
    let ip = kernel_hex_ip(addr.ip());
    let port = format!("{:04X}", addr.port());
    Some(text.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1).unwrap_or("");
        // The state is the fourth field; 0A is LISTEN.
        let state = fields.nth(1).unwrap_or("");
        let (local_ip, local_port) = local.split_once(':').unwrap_or(("", ""));
        state == "0A" && local_port == port && (local_ip == ip || local_ip == wildcard)
    }))
}

/// An address as the kernel's tables print it: each 32-bit word in the
/// host's byte order, in hex.
fn kernel_hex_ip(ip: std::net::IpAddr) -> String {
    let octets: Vec<u8> = match ip {
        std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
        std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    octets
        .chunks(4)
        .map(|word| format!("{:08X}", u32::from_ne_bytes([word[0], word[1], word[2], word[3]])))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_directory_has_one_owner_at_a_time() {
        let dir = std::env::temp_dir().join(format!("tradsys-owner-{}", std::process::id()));
        let first = lock_data_dir(&dir).expect("the first lock");
        let pid = std::process::id().to_string();
        match lock_data_dir(&dir) {
            Err(ServerError::DataDirInUse { dir: d, holder }) => assert_eq!((d, holder), (dir.clone(), pid)),
            other => panic!("a second lock: {other:?}"),
        }
        drop(first);
        let again = lock_data_dir(&dir).expect("the lock after its release");
        drop(again);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn an_address_with_a_listener_is_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
        let addr = listener.local_addr().expect("its address");
        assert!(matches!(
            check_address_free(addr),
            Err(ServerError::AddressInUse { addr: a }) if a == addr
        ));
        assert_eq!(listener_in_kernel_table(addr), Some(true));
        drop(listener);
        assert!(check_address_free(addr).is_ok());
        assert_eq!(listener_in_kernel_table(addr), Some(false));
        assert_eq!(kernel_hex_ip(std::net::Ipv4Addr::LOCALHOST.into()), "0100007F");
        assert!(check_address_free(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).is_ok());
    }
}
