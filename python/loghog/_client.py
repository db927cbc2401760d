"""Client: a bounded queue of encoded frames and one background thread that
writes them to loghogd.

Callers only append to the queue (never touching the network); the sender
thread connects, reconnects with backoff, and writes queued frames in
batches. When the queue is full the oldest waiting frame is dropped and
counted in ``dropped``. Failures are reported on stderr when ``print_debug``
is set, never through :mod:`logging` (a handler that logs its own failures
would feed itself).
"""

import atexit
import logging  # noqa: F401 - imported before our atexit hook so that hook runs first
import os
import random
import socket
import ssl
import sys
import threading
import time
import weakref
from collections import deque

from . import _wire

#: Seconds :meth:`Client.close` (and interpreter exit) waits for the queue to drain.
DEFAULT_CLOSE_TIMEOUT = 5.0
#: First reconnect delay, in seconds; it doubles on every failure up to BACKOFF_MAX.
BACKOFF_START = 0.1
#: Longest reconnect delay, in seconds.
BACKOFF_MAX = 30.0
#: Bytes of frames the sender joins into one stream write.
BATCH_BYTES = 256 * 1024
#: Largest UDP payload over IPv4; a bigger frame can never be sent as a datagram.
UDP_MAX_DATAGRAM = 65507

_live = weakref.WeakSet()


class Client:
    """A loghog sender that never blocks its caller on the network.

    The arguments are those of loghog 0.7's ``LoghogHandler``:

    ``app_name``
        The application (a section of the daemon's facilities.conf).
    ``host``, ``port``
        The daemon; a host name or an IP address (IPv6 without brackets).
    ``stream``
        TCP (or TLS with ``ssl_info``) when true, UDP when false.
    ``secret``
        Signs every message (HMAC-MD5) when set; ``str`` or ``bytes``.
    ``compression``
        zlib-compresses every payload.
    ``hostname``
        Sent with every message; ``socket.gethostname()`` when falsy.
    ``ssl_info``
        ``{'pemfile': CLIENT_PEM, 'cacert': CA_CERT}`` for TLS with a client
        certificate (streams only, as in 0.7). Unlike 0.7, the server's
        certificate must also match ``host``; add ``'check_hostname': False``
        to verify the chain only, as 0.7 did.
    ``max_buffer_size``
        How many messages may wait while the daemon is unreachable; beyond
        it the oldest are dropped (and counted in :attr:`dropped`).
    ``print_debug``
        Print connection and delivery problems to stderr.

    Keyword-only additions:

    ``max_buffer_bytes``
        The same bound in bytes of encoded frames (default 8 MiB).
    ``max_message_size``
        Payloads larger than this are dropped when queued, since loghogd
        closes a connection that announces one (its ``max_msg_size``,
        default 65536).
    ``connect_timeout``, ``write_timeout``
        Seconds a connection attempt, or a stalled write, may take before
        the sender gives up on that connection and reconnects.

    Attributes: ``buffer`` is the queue of frames not yet written (read it,
    do not change it), ``dropped`` the number of messages dropped so far.
    """

    def __init__(
        self,
        app_name,
        host="localhost",
        port=5566,
        stream=True,
        secret=None,
        compression=False,
        hostname=None,
        ssl_info=None,
        max_buffer_size=1024,
        print_debug=False,
        *,
        max_buffer_bytes=8 * 1024 * 1024,
        max_message_size=65536,
        connect_timeout=5.0,
        write_timeout=30.0,
    ):
        if max_buffer_size < 1 or max_buffer_bytes < 1:
            raise ValueError("max_buffer_size and max_buffer_bytes must be positive")
        self.app_name = app_name
        self.address = (host, port)
        self.use_stream = stream
        self.secret = secret
        self.compression = compression
        self.hostname = hostname or socket.gethostname()
        self.pemfile = None
        self.cacert = None
        self.check_hostname = True
        if ssl_info:
            self.pemfile = ssl_info["pemfile"]
            self.cacert = ssl_info["cacert"]
            self.check_hostname = ssl_info.get("check_hostname", True)
        self.max_buffer_size = max_buffer_size
        self.max_buffer_bytes = max_buffer_bytes
        self.max_message_size = max_message_size
        self.connect_timeout = connect_timeout
        self.write_timeout = write_timeout
        self.print_debug = print_debug
        self.dropped = 0
        self.buffer = deque()
        self.sock = None
        self._reset()
        _live.add(self)

    def _reset(self):
        """(Re)creates the queue bookkeeping, the locks and the thread state."""
        self.buffer.clear()
        lock = threading.Lock()
        self._wake = threading.Condition(lock)  # the sender waits for frames
        self._progress = threading.Condition(lock)  # flush() waits for writes
        self._stop = threading.Event()
        self._thread = None
        self._seqs = deque()  # sequence number of each frame in buffer
        self._next_seq = 0
        self._bytes = 0  # bytes of all frames in buffer
        self._inflight = 0  # frames at the head of buffer being written
        self._inflight_bytes = 0
        self._flushers = []  # [target_seq, lost] of each waiting flush()

    # --- producing -------------------------------------------------------

    def encode(self, module, body, stamp, nsecs):
        """The frame for one message, exactly as loghog 0.7 encodes it."""
        return _wire.encode(
            self.app_name, module, stamp, nsecs, self.hostname, body, self.secret, self.compression
        )

    def log(self, module, body):
        """Queues ``body`` for ``module`` (``""`` = the root facility), stamped now."""
        stamp, nsecs = divmod(time.time_ns(), 10**9)
        self._enqueue(self.encode(module, body, stamp, nsecs))

    def _enqueue(self, frame):
        """Appends a frame, drops the oldest past the bounds, wakes the sender."""
        limit = self.max_message_size
        if not self.use_stream:
            limit = min(limit, UDP_MAX_DATAGRAM - 8)
        if len(frame) - 8 > limit:
            with self._wake:
                self.dropped += 1
            self._debug("dropped a %d-byte message: the limit is %d" % (len(frame) - 8, limit))
            return
        with self._wake:
            self.buffer.append(frame)
            self._seqs.append(self._next_seq)
            self._next_seq += 1
            self._bytes += len(frame)
            self._trim()
            self._start_thread()
            self._wake.notify()

    def _trim(self):
        """Drops the oldest waiting frames until the bounds hold (lock held)."""
        while True:
            waiting = len(self.buffer) - self._inflight
            waiting_bytes = self._bytes - self._inflight_bytes
            if waiting == 0 or (
                waiting <= self.max_buffer_size and waiting_bytes <= self.max_buffer_bytes
            ):
                return
            i = self._inflight
            seq = self._seqs[i]
            self._bytes -= len(self.buffer[i])
            del self.buffer[i]
            del self._seqs[i]
            self.dropped += 1
            for waiter in self._flushers:
                if seq < waiter[0]:
                    waiter[1] = True
            self._progress.notify_all()

    def _start_thread(self):
        """Starts the sender thread unless it runs (lock held)."""
        self._stop.clear()
        if self._thread is not None:
            return
        thread = threading.Thread(target=self._run, name="loghog-sender", daemon=True)
        try:
            thread.start()
        except RuntimeError as e:  # e.g. "can't create new thread at interpreter shutdown"
            self._debug("cannot start the sender thread: %s" % e)
            return
        self._thread = thread

    # --- flushing and closing ----------------------------------------------

    def flush(self, timeout=None):
        """Waits until every message queued before this call is written to
        the socket. Returns True then, False when ``timeout`` seconds (None:
        no limit) pass first, or when one of those messages was dropped or
        the client was closed meanwhile."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._progress:
            waiter = [self._next_seq, False]
            self._flushers.append(waiter)
            try:
                while self._seqs and self._seqs[0] < waiter[0] and not waiter[1]:
                    if self._thread is None:
                        return False
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._progress.wait(remaining)
                return not waiter[1]
            finally:
                self._flushers.remove(waiter)

    def close(self, timeout=DEFAULT_CLOSE_TIMEOUT):
        """Flushes for at most ``timeout`` seconds, then stops the sender
        thread and closes the connection. Returns what :meth:`flush` did.
        Messages queued later start a new sender."""
        flushed = self.flush(timeout)
        with self._wake:
            thread = self._thread
            self._stop.set()
            self._wake.notify()
            unsent = len(self.buffer)
        if thread is not None and thread is not threading.current_thread():
            sock = self.sock
            if not flushed and sock is not None:
                try:  # unblocks a write stalled on a daemon that stopped reading
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            thread.join(1.0)
        if unsent and thread is not None:
            self._debug("closed with %d message(s) unsent" % unsent)
        return flushed

    # --- the sender thread -------------------------------------------------

    def _run(self):
        """The sender thread: waits for frames, connects, writes, repeats."""
        backoff = 0.0
        try:
            while True:
                with self._wake:
                    while not self.buffer and not self._stop.is_set():
                        self._wake.wait()
                    if self._stop.is_set():
                        self._exit_thread()
                        return
                if self.sock is None:
                    self.sock = self._connect()
                if self.sock is not None and self._write_batch():
                    backoff = 0.0
                    continue
                if self.sock is not None:
                    self.sock.close()
                    self.sock = None
                backoff = min(backoff * 2, BACKOFF_MAX) if backoff else BACKOFF_START
                self._stop.wait(backoff * random.uniform(0.5, 1.0))
        except BaseException as e:  # a bug: say so, and let the next message restart us
            self._debug("sender thread failed: %r" % (e,))
            with self._wake:
                self._inflight = self._inflight_bytes = 0
                self._exit_thread()

    def _exit_thread(self):
        """Closes the connection and marks the sender gone (lock held)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self._thread = None
        self._progress.notify_all()

    def _connect(self):
        """A connected (for TLS: handshaken) socket, or None after a failure."""
        host, port = self.address
        socktype = socket.SOCK_STREAM if self.use_stream else socket.SOCK_DGRAM
        try:
            infos = socket.getaddrinfo(host, port, 0, socktype)
        except OSError as e:
            self._debug("cannot resolve %s: %s" % (host, e))
            return None
        random.shuffle(infos)  # as 0.7: spread clients over the daemon's addresses
        for af, st, proto, _, addr in infos:
            sock = socket.socket(af, st, proto)
            try:
                start = time.monotonic()
                sock.settimeout(self.connect_timeout)
                sock.connect(addr)
                if self.use_stream and self.pemfile:
                    sock = self._tls_context().wrap_socket(sock, server_hostname=host)
                    if sock.version() == "TLSv1.3":
                        _await_verdict(sock, 2 * (time.monotonic() - start) + 0.05)
                sock.settimeout(self.write_timeout)
                return sock
            except (OSError, ValueError) as e:
                sock.close()
                self._debug("cannot connect to %s port %s: %s" % (addr[0], addr[1], e))
        return None

    def _tls_context(self):
        """A client context with our certificate, trusting only ``cacert``.
        Built per connection, so renewed certificate files are picked up."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = self.check_hostname
        ctx.load_verify_locations(self.cacert)
        ctx.load_cert_chain(self.pemfile)
        return ctx

    def _write_batch(self):
        """Writes frames from the head of the queue; False if the connection failed.

        Frames completely accepted by the kernel leave the queue; a frame cut
        off by an error stays and is sent again, whole, on the next connection.
        """
        sock = self.sock
        if self.use_stream and _peer_closed(sock, self.write_timeout):
            self._debug("the daemon closed the connection")
            return False
        with self._wake:
            batch = []
            size = 0
            for frame in self.buffer:
                if batch and (size + len(frame) > BATCH_BYTES or not self.use_stream):
                    break
                batch.append(frame)
                size += len(frame)
            self._inflight = len(batch)
            self._inflight_bytes = size
        written = 0
        error = None
        try:
            if self.use_stream:
                data = memoryview(b"".join(batch))
                while written < len(data):
                    written += sock.send(data[written:])
            else:
                sock.send(batch[0])
                written = len(batch[0])
        except OSError as e:
            error = e
        with self._wake:
            end = 0
            for frame in batch:
                end += len(frame)
                if end > written:
                    break
                self.buffer.popleft()
                self._seqs.popleft()
                self._bytes -= len(frame)
            self._inflight = self._inflight_bytes = 0
            self._trim()
            self._progress.notify_all()
        if error is not None:
            self._debug("send failed: %s" % error)
            return False
        return True

    # --- misc -------------------------------------------------------------

    def _debug(self, message):
        """Prints ``message`` to stderr when ``print_debug`` is set."""
        if self.print_debug and sys.stderr is not None:
            try:
                print("loghog: %s" % message, file=sys.stderr)
            except (OSError, ValueError):  # stderr closed
                pass


def _peer_closed(sock, timeout):
    """True when the daemon has closed ``sock`` (it never sends us data, so
    anything readable is an end of stream or TLS housekeeping). Leaves the
    socket with ``timeout``."""
    try:
        sock.setblocking(False)
        try:
            return sock.recv(4096) == b""
        finally:
            sock.settimeout(timeout)
    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return False
    except OSError:
        return True


def _await_verdict(sock, window):
    """Waits up to ``window`` seconds for a TLS 1.3 server to refuse our
    certificate. In TLS 1.3 the client's handshake ends before the server
    has checked the client certificate, and its refusal (an alert) comes a
    round trip later; frames written before it would be silently lost.
    Raises OSError (an ``ssl.SSLError`` for the alert) if refused."""
    sock.settimeout(window)
    try:
        if sock.recv(1) == b"":
            raise ConnectionResetError("the daemon closed the connection after the handshake")
    except (socket.timeout, ssl.SSLWantReadError):
        pass  # no verdict: accepted (the daemon never sends anything else)


def _close_all():
    """At interpreter exit: closes every client within one shared timeout."""
    deadline = time.monotonic() + DEFAULT_CLOSE_TIMEOUT
    for client in list(_live):
        client.close(max(0.0, deadline - time.monotonic()))


def _after_fork_in_child():
    """A forked child has no sender thread and maybe a held lock: start over.
    The parent's queued messages stay the parent's to send."""
    for client in list(_live):
        client.sock = None
        client.dropped = 0
        client._reset()


atexit.register(_close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
