//! Syslog as an input (issue 13): RFC 5424 and RFC 3164 messages over UDP
//! ([`udp`], batch receive), TCP and TLS (the shared accept loop and
//! `stream::serve` with a [`SyslogFramer`]), and the local datagram socket
//! ([`unix`], `/dev/log`, with the sender's credentials). Every transport
//! ends in [`SyslogDecoder`]: parse ([`parse`]) → [`Record`] → router,
//! which routes by tag and syslog facility (`FacilityDb::lookup_syslog`).

mod fast;
pub(crate) mod framer;
pub(crate) mod parse;
pub(crate) mod udp;
pub(crate) mod unix;

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use framer::SyslogFramer;
use framer::{payload, FramingCell};
use parse::SyslogParser;

use super::tls::TlsSetup;
use super::{tcp, Decoder, InputCtx};
use crate::config::SyslogSection;
use crate::record::{Auth, Credentials, Record};
use crate::router::Router;

/// Every bound syslog socket.
#[derive(Debug, Default)]
pub struct SyslogListeners {
    /// RFC 5426 datagrams.
    pub udp: Vec<std::net::UdpSocket>,
    /// RFC 6587 streams.
    pub tcp: Vec<std::net::TcpListener>,
    /// RFC 5425 streams.
    pub tls: Vec<std::net::TcpListener>,
    /// The local datagram socket.
    pub unix: Option<unix::UnixSocket>,
}

impl SyslogListeners {
    /// (transport, address) of every network listener.
    pub(crate) fn addrs(&self) -> Vec<(&'static str, SocketAddr)> {
        let one = |name: &'static str, a: io::Result<SocketAddr>| a.ok().map(|a| (name, a));
        self.udp
            .iter()
            .filter_map(|u| one("syslog-udp", u.local_addr()))
            .chain(
                self.tcp
                    .iter()
                    .filter_map(|l| one("syslog-tcp", l.local_addr())),
            )
            .chain(
                self.tls
                    .iter()
                    .filter_map(|l| one("syslog-tls", l.local_addr())),
            )
            .collect()
    }

    /// The local socket's path, if one is bound.
    pub fn unix_path(&self) -> Option<&Path> {
        self.unix.as_ref().map(|u| u.path())
    }
}

/// Binds every syslog listener `section` configures (before privileges
/// are dropped: 514 and `/dev/log` need root).
///
/// # Errors
/// The first address or path that cannot be bound, named in the error.
pub fn bind_syslog(section: &SyslogSection) -> io::Result<SyslogListeners> {
    let named = |what: &str, addr: &dyn std::fmt::Display| {
        let what = what.to_owned();
        let addr = addr.to_string();
        move |e: io::Error| {
            io::Error::new(e.kind(), format!("cannot listen on {addr} ({what}): {e}"))
        }
    };
    let mut l = SyslogListeners::default();
    for addr in &section.listen_udp {
        l.udp
            .push(super::bind_udp(*addr).map_err(named("syslog udp", addr))?);
    }
    for addr in &section.listen_tcp {
        l.tcp
            .push(super::bind_tcp(*addr).map_err(named("syslog tcp", addr))?);
    }
    for addr in &section.listen_tls {
        l.tls
            .push(super::bind_tcp(*addr).map_err(named("syslog tls", addr))?);
    }
    if let Some(path) = &section.unix_socket {
        l.unix = Some(
            unix::UnixSocket::bind(path, section.unix_socket_mode)
                .map_err(named("syslog unix socket", &path.display()))?,
        );
    }
    Ok(l)
}

/// Spawns every syslog listener's loop on `tracker` (inside the runtime).
///
/// # Errors
/// A socket cannot be registered with the runtime.
pub(crate) fn run(
    listeners: SyslogListeners,
    ctx: Arc<InputCtx>,
    tls: Option<TlsSetup>,
    token: CancellationToken,
    tracker: &TaskTracker,
) -> io::Result<()> {
    for u in listeners.udp {
        let u = tokio::net::UdpSocket::from_std(u)?;
        super::log_listening("syslog-udp", &u.local_addr());
        tracker.spawn(udp::recv_loop(u, ctx.clone(), token.clone()));
    }
    for l in listeners.tcp {
        let l = tokio::net::TcpListener::from_std(l)?;
        super::log_listening("syslog-tcp", &l.local_addr());
        tracker.spawn(tcp::accept_loop(
            l,
            None,
            tcp::Wire::Syslog,
            ctx.clone(),
            token.clone(),
            tracker.clone(),
        ));
    }
    if let Some(tls) = tls {
        for l in listeners.tls {
            let l = tokio::net::TcpListener::from_std(l)?;
            super::log_listening("syslog-tls", &l.local_addr());
            tracker.spawn(tcp::accept_loop(
                l,
                Some(tls.clone()),
                tcp::Wire::Syslog,
                ctx.clone(),
                token.clone(),
                tracker.clone(),
            ));
        }
    }
    if let Some(u) = listeners.unix {
        tracing::info!("listening on syslog-unix {}", u.path().display());
        let sock = u.into_tokio()?;
        tracker.spawn(unix::recv_loop(sock, ctx.clone(), token.clone()));
    }
    Ok(())
}

/// Turns syslog messages into records; one per reader (its buffers are
/// reused).
#[derive(Debug, Default)]
pub(crate) struct SyslogDecoder {
    parser: SyslogParser,
    /// A stream's framing (to strip `MSG-LEN SP` or the LF); `None` for
    /// datagrams, which are one whole message each.
    framing: Option<FramingCell>,
    /// The host name of messages that name none on the local socket (this
    /// host's); on the network the router uses the peer's address.
    local_host: Option<String>,
}

// === impl SyslogDecoder ===

impl SyslogDecoder {
    /// For a stream framed by the framer that holds `framing`.
    pub(crate) fn stream(framing: FramingCell) -> SyslogDecoder {
        SyslogDecoder {
            framing: Some(framing),
            ..SyslogDecoder::default()
        }
    }

    /// For datagrams; `local_host` names this host (the local socket).
    pub(crate) fn datagram(local_host: Option<String>) -> SyslogDecoder {
        SyslogDecoder {
            local_host,
            ..SyslogDecoder::default()
        }
    }

    /// Parses one message (no framing left) and routes it. An empty
    /// message (a blank line between frames) is skipped.
    pub(crate) fn decode_message(
        &mut self,
        msg: &[u8],
        cred: Option<Credentials>,
        router: &mut Router,
    ) {
        if msg.iter().all(|b| matches!(b, b'\n' | b'\r' | 0 | b' ')) {
            return;
        }
        let parsed = self.parser.parse(msg);
        let mut meta = parsed.meta;
        meta.cred = cred;
        router.route(&Record {
            app_id: meta.app_name.unwrap_or(""),
            module: "",
            host: parsed.host.or(self.local_host.as_deref()),
            body: parsed.body,
            auth: Auth::None,
            syslog: Some(&meta),
        });
    }
}

impl Decoder for SyslogDecoder {
    fn decode(&mut self, frame: &[u8], router: &mut Router) {
        let msg = match &self.framing {
            Some(f) => payload(f.get(), frame),
            None => frame,
        };
        self.decode_message(msg, None, router);
    }
}

/// The fuzzing entry point (tests/fuzz target `syslog`): `data` framed as
/// a stream (every frame parsed) and parsed whole as a datagram. Panics if
/// a frame passes the cap, a body keeps a control character, or the fast
/// path reads a message differently from `syslog_loose`.
#[doc(hidden)]
pub fn fuzz_syslog(data: &[u8]) {
    const CAP: usize = 1024;
    let mut parser = SyslogParser::default();
    check_parse(&mut parser, data);
    let mut framer = SyslogFramer::new(CAP);
    let mut buf = data;
    while let Ok(Some(n)) = super::Framer::check(&mut framer, buf) {
        assert!(
            n > 0 && n <= buf.len(),
            "frame of {n} in {} bytes",
            buf.len()
        );
        let msg = payload(framer.framing.get(), &buf[..n]);
        assert!(
            msg.len() <= CAP,
            "a {}-byte message passed the cap",
            msg.len()
        );
        check_parse(&mut parser, msg);
        buf = &buf[n..];
    }
}

fn check_parse(parser: &mut SyslogParser, raw: &[u8]) {
    let parsed = parser.parse(raw);
    assert!(
        !parsed
            .body
            .bytes()
            .any(|b| (b < 0x20 && b != b'\t') || b == 0x7f),
        "control character left in {:?}",
        parsed.body
    );
    if let Ok(text) = std::str::from_utf8(parse::trim_end(raw)) {
        if let Some(fast) = fast::parse(text.trim()) {
            let (mut sd, mut pid) = (String::new(), String::new());
            assert_eq!(fast, parse::slow(text, &mut sd, &mut pid), "{text:?}");
        }
    }
}

/// This host's name (for messages from the local socket that carry none).
pub(crate) fn local_hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// The syslog decoder against a router whose outputs are closed (lines
/// stay pending): routing by tag and facility, severity filtering, formats,
/// and the hostile inputs of issue 13 item 5.
/// Chunks a datagram loop reads after the stop at most (the kernel's buffer
/// holds fewer).
const STOP_CHUNKS: usize = 64;

/// The end of one chunk of a datagram loop ([`udp`], [`unix`]): hands the
/// batches on, and says whether the loop is done. While running, a full
/// queue drops and counts (a datagram sender cannot wait); after the stop,
/// what was queued is taken, and a sender that never pauses does not hold
/// the stop up beyond [`STOP_CHUNKS`].
pub(crate) async fn end_chunk(
    router: &mut Router,
    stopping: bool,
    empty: bool,
    drained: &mut usize,
) -> bool {
    if stopping {
        router.flush().await;
        *drained += 1;
        return empty || *drained >= STOP_CHUNKS;
    }
    router.try_flush().await;
    // Let the writer just woken run (see input::udp).
    tokio::task::yield_now().await;
    false
}

/// What a datagram loop does after a failed receive: `None` to try again
/// (interrupted), else stop this chunk, with `Some(true)` when the socket
/// is simply empty. A real failure is logged, rate-limited.
pub(crate) fn after_recv_error(err: &io::Error, what: &str, ctx: &InputCtx) -> Option<bool> {
    match err.kind() {
        io::ErrorKind::Interrupted => None,
        io::ErrorKind::WouldBlock => Some(true),
        _ => {
            if let Some(suppressed) = ctx.router.limiter.check() {
                tracing::warn!(cause = %err, suppressed, "syslog {what} receive failed");
            }
            Some(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::path::Path;

    use super::*;
    use crate::config::FacilityDb;
    use crate::input::Framer;
    use crate::record::Transport;
    use crate::router::RouterCtx;

    const FACILITIES: &str = "\
[syslog]
rotate = daily
backup_count = 3
[syslog:auth]
syslog_facilities = auth, authpriv
format = rfc3164
[syslog:kern]
min_severity = warning
[nginx]
rotate = daily
backup_count = 3
syslog_tags = nginx-error
[signed]
rotate = daily
backup_count = 3
secret = s3
";

    fn router() -> (Arc<RouterCtx>, Router) {
        let db = FacilityDb::parse(FACILITIES, Path::new("facilities.conf")).unwrap();
        let ctx = RouterCtx::for_test(db);
        let r = Router::new(
            ctx.clone(),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            Transport::SyslogTcp,
        );
        (ctx, r)
    }

    fn route_all(msgs: &[&[u8]]) -> (Arc<RouterCtx>, Vec<(String, String)>) {
        let (ctx, mut r) = router();
        let mut d = SyslogDecoder::datagram(None);
        for m in msgs {
            d.decode_message(m, None, &mut r);
        }
        let lines = r.take_pending();
        (ctx, lines)
    }

    fn stat(ctx: &RouterCtx, name: &str) -> u64 {
        ctx.stats.get(name).unwrap()
    }

    #[test]
    fn routing_table() {
        let (ctx, lines) = route_all(&[
            b"<38>Feb  5 17:32:18 web01 sshd[812]: Accepted publickey",
            b"<86>1 - web01 sudo - - - pam_unix(sudo:session): opened",
            b"<30>1 - web01 nginx 7 - - started",
            b"<27>1 - web01 nginx-error 7 - - failed",
            b"<3>1 - web01 kernel - - - disk on fire",
            b"<6>1 - web01 kernel - - - too chatty",
            b"<13>1 - web01 signed - - - unsigned",
            b"<165>1 - web01 app - - - local4 goes to the catch-all",
        ]);
        let sections: Vec<&str> = lines.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            sections,
            [
                "syslog:auth",
                "syslog:auth",
                "nginx",
                "nginx",
                "syslog:kern",
                "syslog",
                "syslog"
            ],
            "{lines:#?}"
        );
        // A signed app never takes syslog messages: its tag falls through.
        assert!(
            lines[5].1.ends_with(" - web01 - signed: unsigned"),
            "{lines:#?}"
        );
        assert!(
            lines[0].1.ends_with(" web01 sshd[812]: Accepted publickey"),
            "{lines:#?}"
        );
        assert!(
            lines[2].1.ends_with(" - web01 - nginx[7]: started"),
            "{lines:#?}"
        );
        assert_eq!(stat(&ctx, "filtered"), 1);
        assert_eq!(stat(&ctx, "received"), 8);
    }

    #[test]
    fn without_a_syslog_section_unknown_tags_are_dropped() {
        let db = FacilityDb::parse(
            "[nginx]\nrotate = daily\nbackup_count = 1\n",
            Path::new("facilities.conf"),
        )
        .unwrap();
        let ctx = RouterCtx::for_test(db);
        let mut r = Router::new(
            ctx.clone(),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            Transport::SyslogUdp,
        );
        let mut d = SyslogDecoder::datagram(None);
        d.decode_message(b"<13>1 - h other - - - x", None, &mut r);
        d.decode_message(b"<13>1 - h nginx - - - y", None, &mut r);
        let lines = r.take_pending();
        assert_eq!(lines.len(), 1);
        assert_eq!(stat(&ctx, "unknown_app"), 1);
    }

    /// Item 5's hostile inputs through framer + decoder: each is dropped,
    /// refused or written safely, and the stream goes on where it can.
    #[test]
    fn hostile_stream_input() {
        let (ctx, mut r) = router();
        let mut framer = SyslogFramer::new(16 << 10);
        let mut d = SyslogDecoder::stream(framer.framing.clone());
        let tag = "t".repeat(10_000);
        let mut stream = Vec::new();
        for m in [
            "<13>1 - h app - - - nul\0inside".to_owned(),
            "<9999>Feb  5 17:32:18 h app: invalid pri".to_owned(),
            format!("<13>Feb  5 17:32:18 h {tag}[1]: long tag"),
        ] {
            stream.extend_from_slice(format!("{} {m}", m.len()).as_bytes());
        }
        stream.extend_from_slice(b"999999999 <13>huge");
        let mut buf = &stream[..];
        let err = loop {
            match framer.check(buf) {
                Ok(Some(n)) => {
                    d.decode(&buf[..n], &mut r);
                    buf = &buf[n..];
                }
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        assert!(err.unwrap().to_string().contains("over max_msg_size"));
        let lines = r.take_pending();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines[0].1.ends_with("app: nul#000inside"), "{lines:#?}");
        assert!(lines[1].1.contains("<9999>"), "{lines:#?}");
        assert!(lines[2].1.contains("long tag"));
        assert_eq!(stat(&ctx, "received"), 3);
    }
}
