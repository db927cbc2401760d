//! Paced load (issue 9): a connection that sends small bursts back to back
//! is coalesced (its data left in the kernel's socket buffer until a full
//! read is waiting or the shared tick comes). Nothing may be lost,
//! reordered or left behind in the kernel: not the tail of a burst on a
//! connection that stays open, not what is in flight when the daemon stops.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::util::*;

/// Gap between two bursts: well inside one coalescing tick, so the
/// connection reads again soon after its last read and is coalesced.
const GAP: Duration = Duration::from_millis(1);

/// Writes `bursts` bursts of `per_burst` messages (`c{conn} n{seq}`) on `s`,
/// one burst every [`GAP`], starting at message `first`; returns the next
/// sequence number.
fn send_paced(
    s: &mut TcpStream,
    conn: usize,
    first: usize,
    bursts: usize,
    per_burst: usize,
) -> usize {
    let mut seq = first;
    for _ in 0..bursts {
        let mut bytes = Vec::new();
        for _ in 0..per_burst {
            bytes.extend(simple("app", &format!("c{conn} n{seq:06} small burst")));
            seq += 1;
        }
        s.write_all(&bytes).expect("write to daemon");
        // Pacing the sender, as a client in a fleet sends: no race is
        // waited out here (every check below polls under a deadline).
        std::thread::sleep(GAP);
    }
    seq
}

/// Paced bursts on `conns` connections in parallel, then one last message
/// each, the connections left open; returns them (still open) once all is sent.
fn paced_open(addr: SocketAddr, conns: usize, bursts: usize) -> (Vec<TcpStream>, usize) {
    let threads: Vec<_> = (0..conns)
        .map(|c| {
            std::thread::spawn(move || {
                let mut s = connect(addr);
                let next = send_paced(&mut s, c, 0, bursts, 2);
                // A last message far below any read size: the kernel never
                // reports it readable on its own while coalescing.
                let next = send_paced(&mut s, c, next, 1, 1);
                (s, next)
            })
        })
        .collect();
    let mut open = Vec::new();
    let mut per_conn = 0;
    for t in threads {
        let (s, n) = t.join().expect("sender thread");
        open.push(s);
        per_conn = n;
    }
    (open, per_conn)
}

#[test]
fn paced_small_bursts_arrive_exactly_once_in_order_while_connections_stay_open() {
    let setup = Setup::new();
    let mut d = InProcess::start(&setup);
    let (open, per_conn) = paced_open(d.tcp_addr(), 8, 300);
    // The connections stay open: no EOF makes the tail readable, only the
    // daemon's own tick collects it.
    let lines = wait_for_lines(&setup.log("app/root.log"), 8 * per_conn, DEADLINE);
    check_numbers(&lines, 8, per_conn);
    d.wait_stat("written", (8 * per_conn) as u64);
    // A quiet connection is read on its next byte again: one more message
    // after the pause arrives too.
    let mut open = open;
    let next = send_paced(&mut open[0], 0, per_conn, 1, 1);
    let lines = wait_for_lines(&setup.log("app/root.log"), 8 * per_conn + 1, DEADLINE);
    assert_eq!(lines.len(), 8 * per_conn + 1);
    assert_eq!(
        parse_line(&lines[8 * per_conn]).2,
        format!("c0 n{:06} small burst", next - 1)
    );
    d.stop();
    drop(open);
}

#[test]
fn stop_drains_what_coalesced_connections_left_in_the_kernel() {
    let setup = Setup::new();
    let mut d = InProcess::start(&setup);
    let (open, per_conn) = paced_open(d.tcp_addr(), 4, 200);
    // Stopped at once, with the last messages possibly still in the
    // kernel below the low-water mark: the drain must read them.
    d.stop();
    let lines = wait_for_lines(&setup.log("app/root.log"), 4 * per_conn, DEADLINE);
    check_numbers(&lines, 4, per_conn);
    assert_eq!(d.stat("written"), (4 * per_conn) as u64);
    drop(open);
}
