//! Who may hold a connection: `[server] max_connections` for all TCP and
//! TLS listeners together and `max_connections_per_ip` for each peer
//! address. The accept loops ask [`Admission::admit`] for every connection
//! they accept; one refused is closed at once (issue 12: a cap that stopped
//! accepting let the kernel's queue fill and locked every new peer out).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Counts the connections held, in all and per peer address.
#[derive(Debug)]
pub(crate) struct Admission {
    /// `max_connections`.
    max_total: usize,
    /// `max_connections_per_ip`.
    max_per_ip: usize,
    /// Taken once per accept and once per close, never per read.
    state: Mutex<Held>,
}

/// What is held now. `per_ip` has an entry only for addresses holding a
/// connection, so it never outgrows `max_total` entries.
#[derive(Debug, Default)]
struct Held {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections` are held.
    Full,
    /// The peer's address holds `max_connections_per_ip`.
    PerIp,
}

/// One admitted connection's place; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct Slot {
    admission: Arc<Admission>,
    ip: IpAddr,
}

// === impl Admission ===

impl Admission {
    /// Room for `max_total` connections, `max_per_ip` from any one address.
    pub(crate) fn new(max_total: usize, max_per_ip: usize) -> Admission {
        Admission {
            max_total,
            max_per_ip,
            state: Mutex::new(Held::default()),
        }
    }

    /// A slot for a connection from `ip`, or why there is none.
    ///
    /// # Errors
    /// The daemon-wide or the per-address cap is reached.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        // An IPv4 peer reaching an IPv6 socket as ::ffff:a.b.c.d is the
        // same host as a.b.c.d.
        let ip = ip.to_canonical();
        let mut held = self.lock();
        if held.total >= self.max_total {
            return Err(Refusal::Full);
        }
        let from_ip = held.per_ip.entry(ip).or_insert(0);
        if *from_ip >= self.max_per_ip {
            return Err(Refusal::PerIp);
        }
        *from_ip += 1;
        held.total += 1;
        Ok(Slot {
            admission: self.clone(),
            ip,
        })
    }

    /// `max_connections`, for log lines.
    pub(crate) fn max_total(&self) -> usize {
        self.max_total
    }

    /// `max_connections_per_ip`, for log lines.
    pub(crate) fn max_per_ip(&self) -> usize {
        self.max_per_ip
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // Poisoned only if a thread panicked between two integer updates;
        // the counts are still the best there are.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

// === impl Slot ===

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.admission.lock();
        held.total = held.total.saturating_sub(1);
        if let Some(n) = held.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn caps_hold_in_all_and_per_address_and_free_on_drop() {
        let a = Arc::new(Admission::new(3, 2));
        let one = a.admit(ip("10.0.0.1")).unwrap();
        let two = a.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(a.admit(ip("10.0.0.1")).unwrap_err(), Refusal::PerIp);
        // The mapped form of the same address is the same peer.
        assert_eq!(a.admit(ip("::ffff:10.0.0.1")).unwrap_err(), Refusal::PerIp);
        let three = a.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(a.admit(ip("10.0.0.3")).unwrap_err(), Refusal::Full);
        drop(one);
        let again = a.admit(ip("10.0.0.1")).unwrap();
        drop((two, three, again));
        let held = a.lock();
        assert_eq!(held.total, 0);
        assert!(held.per_ip.is_empty(), "{:?}", held.per_ip);
    }

    #[test]
    fn a_refusal_leaves_no_entry_behind() {
        let a = Arc::new(Admission::new(1, 1));
        let _only = a.admit(ip("10.0.0.1")).unwrap();
        for i in 2..100 {
            assert!(a.admit(ip(&format!("10.0.0.{i}"))).is_err());
        }
        // The map must not grow with every address that was refused.
        assert_eq!(a.lock().per_ip.len(), 1);
    }
}
