"""Test harness: the real target/release/loghogd in a temp dir.

The Python counterpart of tests/it/util.rs: a temp dir with loghogd.conf
and facilities.conf, the daemon on ephemeral (or chosen) ports, its stderr
collected by a thread, the `listening on PROTO ADDR` lines parsed, and
pollers for the files it writes. Every wait is bounded and fails with what
it saw.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BINARY = os.path.join(REPO, "target", "release", "loghogd")
CERTS = os.path.join(REPO, "tests", "certs")
DEADLINE = 20.0

#: `YYYY-MM-DD HH:MM:SS.ffffff - host - body` (SPEC section 4).
LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}) - ([^ ]+) - (.*)$")


def cert(name):
    """Path of tests/certs/NAME."""
    return os.path.join(CERTS, name)


def free_port():
    """A TCP and UDP port on 127.0.0.1 that nothing is bound to right now."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


class Setup:
    """A temp dir holding both config files; ``log/`` is the logdir."""

    def __init__(self, facilities, listen="127.0.0.1:0", server_extra=""):
        if not os.access(BINARY, os.X_OK):
            raise AssertionError("%s is missing: cargo build --release --bin loghogd" % BINARY)
        self.root = tempfile.mkdtemp(prefix="loghogd-pytest-")
        self.conf = os.path.join(self.root, "loghogd.conf")
        with open(self.conf, "w") as f:
            f.write(
                "[main]\nlogdir = log\nworkdir = lib\nrundir = run\npidfile = loghogd.pid\n"
                "facilities_config = facilities.conf\n\n"
                "[server]\nlisten_ipv4 = %s\nlisten_ipv6 =\n%s\n" % (listen, server_extra)
            )
        with open(os.path.join(self.root, "facilities.conf"), "w") as f:
            f.write(facilities)

    def log(self, rel):
        """Path of ``log/REL``."""
        return os.path.join(self.root, "log", rel)

    def log_files(self):
        """Every file under log/, relative and sorted."""
        out = []
        for d, _, files in os.walk(os.path.join(self.root, "log")):
            out += [os.path.relpath(os.path.join(d, f), os.path.join(self.root, "log")) for f in files]
        return sorted(out)

    def cleanup(self):
        """Removes the temp dir."""
        shutil.rmtree(self.root, ignore_errors=True)


class Daemon:
    """A running loghogd (foreground, NO_COLOR), stopped by :meth:`stop`."""

    def __init__(self, setup):
        self.proc = subprocess.Popen(
            [BINARY, "-c", setup.conf],
            env=dict(os.environ, NO_COLOR="1"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_for(lambda: "loghogd ready" in self.stderr() or self.proc.poll() is not None,
                 lambda: "loghogd not ready:\n" + self.stderr())
        if self.proc.poll() is not None:
            raise AssertionError("loghogd exited (%s):\n%s" % (self.proc.returncode, self.stderr()))
        self.tcp = self._listening("tcp")
        self.udp = self._listening("udp")
        self.tls = self._listening("tls")

    def _read(self):
        with self.proc.stderr:
            for raw in self.proc.stderr:
                self._lines.append(raw.decode("utf-8", "replace"))

    def stderr(self):
        """The daemon's log so far."""
        return "".join(self._lines)

    def _listening(self, proto):
        """The port of the first `listening on PROTO ADDR` line, or None."""
        m = re.search(r"listening on %s \S+:(\d+)" % proto, self.stderr())
        return int(m.group(1)) if m else None

    def stop(self):
        """SIGTERM; waits for exit status 0. Returns the `stats` counters."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("loghogd ignored SIGTERM:\n" + self.stderr())
        self._reader.join(5)
        if code != 0:
            raise AssertionError("loghogd exited %d:\n%s" % (code, self.stderr()))
        stats = [l for l in self._lines if "stats " in l]
        if not stats:
            raise AssertionError("no stats line:\n" + self.stderr())
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", stats[-1])}

    def kill(self):
        """For cleanup after a failure: SIGKILL if still running."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_for(cond, describe, deadline=DEADLINE):
    """Polls ``cond`` every 10 ms; fails with ``describe()`` after ``deadline`` s."""
    end = time.monotonic() + deadline
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(describe())
        time.sleep(0.01)


def records(path):
    """The (host, body) records of a log file; lines that do not start with
    a timestamp continue the previous body (multi-line messages)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not text.endswith("\n"):
        raise AssertionError("%s does not end with a newline: %r" % (path, text[-80:]))
    out = []
    for line in text[:-1].split("\n"):
        m = LINE.match(line)
        if m:
            out.append((m.group(2), m.group(3)))
        elif out:
            out[-1] = (out[-1][0], out[-1][1] + "\n" + line)
        else:
            raise AssertionError("%s does not start with a record: %r" % (path, line))
    return out


def wait_for_records(path, n):
    """Waits until ``path`` holds at least ``n`` records; returns them."""
    got = []

    def ready():
        if not os.path.exists(path):
            return False
        try:
            got[:] = records(path)
        except AssertionError:  # caught in the middle of a write
            return False
        return len(got) >= n

    wait_for(ready, lambda: "%s: %d of %d records: %r" % (path, len(got), n, got[-3:]))
    return got
