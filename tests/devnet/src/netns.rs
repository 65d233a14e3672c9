//! Linux network namespaces for the wide-area harness: a process started in a [`NetNamespace`]
//! has its own network stack, joined to the host by one veth pair, and is reachable only at its
//! namespace's address (not on the host's loopback) — so a signer node "in another region" can be
//! reached only through the [`LatencyProxy`](crate::wan::LatencyProxy) the harness puts in front.
//!
//! Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2's `ip`. Each namespace is named
//! `treasury-wan-<pid>-<slot>` after the process that made it, and its slot (the veth's name,
//! `trw<slot>h`, which the kernel lets only one namespace take) fixes its /30 in 10.201.0.0/16.
//! Dropping it deletes it (the veth pair goes with it); [`NetNamespace::create`] first deletes the
//! namespaces of harness processes that are gone (a run that crashed), killing what still runs in them.
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Prefix of every namespace the harness makes.
const PREFIX: &str = "treasury-wan-";

/// Slots: one /30 each in 10.201.0.0/16.
const SLOTS: u32 = 1 << 14;

/// Why a namespace could not be made.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// `ip` could not be started at all.
    #[error("running `ip {args}`")]
    Spawn {
        /// The arguments.
        args: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `ip` failed.
    #[error("`ip {args}` failed: {stderr}")]
    Ip {
        /// The arguments.
        args: String,
        /// What it printed.
        stderr: String,
    },
    /// Every slot is taken.
    #[error("no free veth slot in 10.201.0.0/16 ({SLOTS} tried)")]
    NoSlot,
}

/// One network namespace joined to the host by a veth pair; deleted on drop.
#[derive(Debug)]
pub struct NetNamespace {
    name: String,
    slot: u32,
}

fn ip(args: &[&str]) -> Result<(), NetnsError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| NetnsError::Spawn { args: args.join(" "), source })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetnsError::Ip {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn ip_output(args: &[&str]) -> Result<String, NetnsError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| NetnsError::Spawn { args: args.join(" "), source })?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The addresses of slot `slot`: (host end, namespace end).
fn addresses(slot: u32) -> (Ipv4Addr, Ipv4Addr) {
    let base = u32::from(Ipv4Addr::new(10, 201, 0, 0)) + slot * 4;
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

impl NetNamespace {
    /// Makes a namespace with the loopback up and a veth pair to the host, after deleting the
    /// namespaces of harness runs whose process is gone.
    pub fn create() -> Result<Self, NetnsError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        remove_stale();
        let pid = std::process::id();
        let start =
            (pid.wrapping_mul(2_654_435_761) >> 4).wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed) * 7);
        for i in 0..SLOTS {
            let slot = (start.wrapping_add(i)) % SLOTS;
            let name = format!("{PREFIX}{pid}-{slot}");
            match ip(&["netns", "add", &name]) {
                Ok(()) => {}
                // Taken by another thread of this process: try the next slot.
                Err(NetnsError::Ip { stderr, .. }) if stderr.contains("exists") => continue,
                Err(e) => return Err(e),
            }
            let ns = Self { name, slot };
            let (host, peer) = (ns.host_link(), format!("trw{slot}n"));
            match ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer, "netns", &ns.name]) {
                Ok(()) => {}
                Err(NetnsError::Ip { stderr, .. }) if stderr.contains("exists") => continue,
                Err(e) => return Err(e),
            }
            ns.configure(&peer)?;
            return Ok(ns);
        }
        Err(NetnsError::NoSlot)
    }

    fn host_link(&self) -> String {
        format!("trw{}h", self.slot)
    }

    fn configure(&self, peer: &str) -> Result<(), NetnsError> {
        let (host, inside) = addresses(self.slot);
        let host_cidr = format!("{host}/30");
        let inside_cidr = format!("{inside}/30");
        let n = self.name.as_str();
        ip(&["addr", "add", &host_cidr, "dev", &self.host_link()])?;
        ip(&["link", "set", &self.host_link(), "up"])?;
        ip(&["-n", n, "addr", "add", &inside_cidr, "dev", peer])?;
        ip(&["-n", n, "link", "set", peer, "up"])?;
        ip(&["-n", n, "link", "set", "lo", "up"])
    }

    /// Its name (`ip netns exec NAME …`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address of the namespace's end of the veth pair (where its servers listen).
    pub fn addr(&self) -> Ipv4Addr {
        addresses(self.slot).1
    }

    /// The address of the host's end (how a process inside reaches a server on the host).
    pub fn host_addr(&self) -> Ipv4Addr {
        addresses(self.slot).0
    }

    /// A command running `program` inside the namespace (through `ip netns exec`, which executes
    /// it in its place: the child's pid is the program's), killed if its parent thread dies.
    pub fn command(&self, program: &Path) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("setpriv");
        cmd.args(["--pdeathsig", "KILL", "ip", "netns", "exec", &self.name]).arg(program);
        cmd
    }
}

impl Drop for NetNamespace {
    fn drop(&mut self) {
        // The veth pair goes with the namespace once nothing runs in it.
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Checks that this process can make namespaces: makes one and deletes it. The error says why
/// not (not root, no `ip`, no kernel support).
pub fn probe() -> Result<(), NetnsError> {
    NetNamespace::create().map(drop)
}

/// Deletes the harness's namespaces whose process is gone (a run killed before its drop ran),
/// killing whatever still runs in them (orphaned nodes would keep them alive). Returns how many.
pub fn remove_stale() -> usize {
    let Ok(list) = ip_output(&["netns", "list"]) else { return 0 };
    let mut removed = 0;
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|rest| rest.split('-').next()) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(pids) = ip_output(&["netns", "pids", name]) {
            for p in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
            }
        }
        if ip(&["netns", "del", name]).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_get_disjoint_subnets() {
        let (h0, n0) = addresses(0);
        let (h1, n1) = addresses(1);
        let (hl, nl) = addresses(SLOTS - 1);
        assert_eq!((h0, n0), (Ipv4Addr::new(10, 201, 0, 1), Ipv4Addr::new(10, 201, 0, 2)));
        assert_eq!((h1, n1), (Ipv4Addr::new(10, 201, 0, 5), Ipv4Addr::new(10, 201, 0, 6)));
        assert_eq!((hl, nl), (Ipv4Addr::new(10, 201, 255, 253), Ipv4Addr::new(10, 201, 255, 254)));
    }

    fn namespaces() -> String {
        ip_output(&["netns", "list"]).unwrap()
    }

    #[test]
    fn a_process_inside_sees_only_its_own_addresses_and_the_namespace_goes_on_drop() {
        let ns = NetNamespace::create().expect("the harness needs network namespaces (run as root)");
        let name = ns.name().to_string();
        assert!(namespaces().contains(&name));
        let out =
            Command::new("ip").args(["netns", "exec", &name, "ip", "-o", "-4", "addr"]).output().unwrap();
        let addrs = String::from_utf8_lossy(&out.stdout);
        assert!(addrs.contains(&format!("{}/30", ns.addr())), "{addrs}");
        let host = ip_output(&["-o", "-4", "addr"]).unwrap();
        let host_main = host
            .lines()
            .find(|l| !l.contains(" lo ") && !l.contains("trw"))
            .map(|l| l.split_whitespace().nth(3).unwrap_or_default().to_string());
        if let Some(main) = host_main {
            assert!(!addrs.contains(&main), "the host's {main} is not inside: {addrs}");
        }
        drop(ns);
        assert!(!namespaces().contains(&name), "deleted on drop");
    }

    #[test]
    fn namespaces_left_by_a_crashed_run_are_removed() {
        let mut gone = Command::new("true").spawn().unwrap();
        let dead = gone.id();
        gone.wait().unwrap();
        let name = format!("{PREFIX}{dead}-0");
        ip(&["netns", "add", &name]).unwrap();
        assert!(namespaces().contains(&name));
        let ns = NetNamespace::create().unwrap();
        assert!(
            !namespaces().contains(&name),
            "a namespace whose process is gone is deleted before a new one is made"
        );
        assert!(namespaces().contains(ns.name()), "one whose process lives is kept");
    }
}
