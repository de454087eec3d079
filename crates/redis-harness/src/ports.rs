//! Free loopback ports, never handed out twice in one process.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, PoisonError};

/// A cluster node also listens on its port plus this offset: the cluster bus.
pub(crate) const CLUSTER_BUS_OFFSET: u16 = 10_000;

/// How many ports the kernel may offer before we give up.
const ATTEMPTS: usize = 1_000;

/// Ports already handed out by this process. The kernel may offer a port again as soon as the
/// probing listener is dropped, e.g. while a killed server waits for `restart` on it; tests run on
/// parallel threads, so this set is process-wide. Ports are never returned: a test process needs
/// few of them.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// What the port is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PortUse {
    /// A standalone server: the port alone must be free.
    Single,
    /// A cluster node: the cluster bus port (`port + 10000`) must be free and below 65535 too.
    ClusterNode,
}

/// A loopback port that is free now and that this process has not handed out before.
///
/// Another process may still take it before the server binds it; the caller retries with a new
/// port when the server reports the address in use.
///
/// # Panics
/// When no such port turns up in [`ATTEMPTS`] tries.
pub(crate) fn free_port(port_use: PortUse) -> u16 {
    for _ in 0..ATTEMPTS {
        let Some(port) = probe() else { continue };
        let bus = match port_use {
            PortUse::Single => None,
            PortUse::ClusterNode => match port.checked_add(CLUSTER_BUS_OFFSET) {
                Some(bus) if bus < u16::MAX && is_free(bus) => Some(bus),
                _ => continue,
            },
        };
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
        if handed_out.contains(&port) || bus.is_some_and(|bus| handed_out.contains(&bus)) {
            continue;
        }
        handed_out.insert(port);
        handed_out.extend(bus);
        return port;
    }
    panic!("no free loopback port ({port_use:?}) found in {ATTEMPTS} attempts");
}

/// A port the kernel considers free right now: bind port 0, read it, drop the listener.
fn probe() -> Option<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).ok()?;
    listener.local_addr().ok().map(|addr| addr.port())
}

fn is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}
