//! Hosts of a test's own: network namespaces, each joined by a veth pair
//! to a bridge in the test's namespace. Host `i` has the address
//! `10.77.0.<i + 1>/24` (the addresses shards/cluster.toml names) on its
//! end, the bridge `10.77.0.254/24`; the servers the hosts share (Redis,
//! PostgreSQL, nginx) listen there. Only these addresses and loopback are
//! ever reached. Dropping [`Hosts`] deletes the namespaces (their veth
//! ends go with them) and the bridge.
//!
//! The names carry the test process's id. Namespaces and bridges of this
//! scheme left by a test process that no longer runs (killed before it
//! cleaned up) are deleted first: their addresses would clash.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

/// The bridge's address: where the hosts reach the shared servers.
pub const BRIDGE_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 254));
/// The hosts' network, for servers that trust its clients.
pub const NETWORK: &str = "10.77.0.0/24";
const NETNS_PREFIX: &str = "tradsys-host-";
const BRIDGE_PREFIX: &str = "tsbr";

pub struct Hosts {
    pub names: Vec<String>,
    bridge: String,
    pid: u32,
}

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

fn pid_alive(pid: &str) -> bool {
    std::path::Path::new("/proc").join(pid).exists()
}

/// Deletes namespaces and bridges of this scheme whose process is gone.
fn remove_leftovers() {
    let netns = ip(&["netns", "list"]).unwrap_or_default();
    for name in netns.lines().filter_map(|l| l.split_whitespace().next()) {
        if let Some(rest) = name.strip_prefix(NETNS_PREFIX) {
            if rest.split('-').next().is_some_and(|pid| !pid_alive(pid)) {
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
    let links = ip(&["-o", "link", "show", "type", "bridge"]).unwrap_or_default();
    for link in links.lines().filter_map(|l| l.split(": ").nth(1)) {
        if let Some(pid) = link.strip_prefix(BRIDGE_PREFIX) {
            if !pid_alive(pid) {
                let _ = ip(&["link", "del", link]);
            }
        }
    }
}

impl Hosts {
    /// `count` hosts (at most 253).
    pub fn create(count: usize) -> Result<Hosts, String> {
        remove_leftovers();
        let pid = std::process::id();
        let mut hosts = Hosts {
            names: Vec::new(),
            bridge: format!("{BRIDGE_PREFIX}{pid}"),
            pid,
        };
        ip(&["link", "add", &hosts.bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{BRIDGE_IP}/24"), "dev", &hosts.bridge])?;
        ip(&["link", "set", &hosts.bridge, "up"])?;
        for i in 0..count {
            let name = format!("{NETNS_PREFIX}{pid}-{i}");
            ip(&["netns", "add", &name])?;
            hosts.names.push(name.clone());
            let (outside, inside) = (format!("tsv{pid}o{i}"), format!("tsv{pid}i{i}"));
            ip(&["link", "add", &outside, "type", "veth", "peer", "name", &inside])?;
            ip(&["link", "set", &outside, "master", &hosts.bridge])?;
            ip(&["link", "set", &outside, "up"])?;
            ip(&["link", "set", &inside, "netns", &name])?;
            let addr = format!("{}/24", Hosts::address(i));
            ip(&["-n", &name, "addr", "add", &addr, "dev", &inside])?;
            ip(&["-n", &name, "link", "set", &inside, "up"])?;
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
        }
        Ok(hosts)
    }

    /// Cuts host `i` off the network (its veth pair's outer end down), or
    /// joins it again.
    pub fn set_link(&self, i: usize, up: bool) -> Result<(), String> {
        let outside = format!("tsv{}o{i}", self.pid);
        ip(&["link", "set", &outside, if up { "up" } else { "down" }]).map(drop)
    }

    /// Host `i`'s address.
    pub fn address(i: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 77, 0, i as u8 + 1))
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = ip(&["netns", "del", name]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}
