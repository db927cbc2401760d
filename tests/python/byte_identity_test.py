#!/usr/bin/env python3
"""loghog 0.8 writes the same bytes as the published loghog 0.7.

Both clients send the records of frames.py (pinned clock and host name) to
a socket this test listens on; the captured streams (TCP) and datagrams
(UDP) must be equal byte for byte, in every combination of compression,
signing and default host name.

    LOGHOG07_PYTHON=target/venv-loghog/bin/python python3 tests/python/byte_identity_test.py

0.7 runs under LOGHOG07_PYTHON (required); 0.8 runs under the interpreter
running this test, with the repository's python/ directory on PYTHONPATH.
"""

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import unittest
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FRAMES = os.path.join(HERE, "frames.py")
sys.path.insert(0, HERE)
from frames import RECORDS  # noqa: E402

DEADLINE = 20.0
KEYS = ["version", "app_id", "module", "stamp", "nsecs", "hostname", "body"]


def python07():
    """The interpreter with loghog 0.7; the test fails without one."""
    py = os.environ.get("LOGHOG07_PYTHON")
    if not py:
        raise AssertionError("LOGHOG07_PYTHON is not set (scripts/test-python sets it)")
    return py


def capture(python, env, mode, extra):
    """Runs frames.py under ``python`` against a fresh listener; returns
    (stdout, list of frames as bytes)."""
    kind = socket.SOCK_STREAM if mode == "tcp" else socket.SOCK_DGRAM
    srv = socket.socket(socket.AF_INET, kind)
    srv.bind(("127.0.0.1", 0))
    srv.settimeout(DEADLINE)
    chunks = []
    if mode == "tcp":
        srv.listen(1)

        def serve():
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(DEADLINE)
                while True:
                    data = conn.recv(65536)
                    if not data:
                        return
                    chunks.append(data)

        reader = threading.Thread(target=serve)
        reader.start()
    cmd = [python, FRAMES, "--port", str(srv.getsockname()[1]), "--mode", mode] + extra
    out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         timeout=DEADLINE, universal_newlines=True)
    if out.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s%s" % (cmd, out.returncode, out.stdout, out.stderr))
    if mode == "tcp":
        reader.join(DEADLINE)
        frames = split(b"".join(chunks))
    else:
        frames = []
        while len(frames) < len(RECORDS):
            frames.append(srv.recv(65536))
    srv.close()
    return out.stdout, frames


def split(stream):
    """Cuts a TCP stream into frames by their length fields."""
    frames = []
    while stream:
        (n,) = struct.unpack("!L", stream[:4])
        frames.append(stream[: 8 + n])
        stream = stream[8 + n:]
    return frames


class ByteIdentity(unittest.TestCase):
    """The same records through 0.7 and 0.8 give the same frames."""

    def compare(self, mode, extra):
        env07 = dict(os.environ)
        env07.pop("PYTHONPATH", None)
        out07, frames07 = capture(python07(), env07, mode, extra)
        env08 = dict(os.environ, PYTHONPATH=os.path.join(REPO, "python"))
        out08, frames08 = capture(sys.executable, env08, mode, extra)
        self.assertTrue(out07.startswith("loghog 0.7 "), out07)
        self.assertTrue(out08.startswith("loghog 0.8 " + os.path.join(REPO, "python")), out08)

        self.assertEqual(len(frames07), len(RECORDS), "0.7 frames")
        self.assertEqual(len(frames08), len(RECORDS), "0.8 frames")
        for i, (a, b) in enumerate(zip(frames07, frames08)):
            self.assertEqual(a, b, "frame %d (%r) differs" % (i, RECORDS[i][2][:40]))

        # What they agree on is the protocol, not an accident (SPEC section 1).
        compressed = "--compress" in extra
        for frame, (name, msecs, message) in zip(frames08, RECORDS):
            n, flags = struct.unpack("!LL", frame[:8])
            self.assertEqual(n, len(frame) - 8)
            self.assertEqual(flags, 1 if compressed else 0)
            payload = zlib.decompress(frame[8:]) if compressed else frame[8:]
            payload.decode("ascii")  # ensure_ascii: \\uXXXX escapes only
            data = json.loads(payload)
            want = KEYS + (["signature"] if "--secret" in extra else [])
            self.assertEqual(list(data), want)
            self.assertEqual(data["module"], name or "root")
            self.assertEqual(data["stamp"], 1358363502)
            self.assertEqual(data["nsecs"], int(msecs * 10**6))
            self.assertTrue(data["body"].endswith(message))
            host = "patched-host" if "--default-hostname" in extra else "fixed-host"
            self.assertEqual(data["hostname"], host)

    def test_tcp(self):
        self.compare("tcp", [])

    def test_tcp_compressed(self):
        self.compare("tcp", ["--compress"])

    def test_tcp_signed(self):
        self.compare("tcp", ["--secret", "01WzaGPu"])

    def test_tcp_signed_non_ascii_secret_compressed(self):
        self.compare("tcp", ["--secret", "s\u00ebcr\u00ebt \U0001F511", "--compress"])

    def test_tcp_default_hostname(self):
        self.compare("tcp", ["--default-hostname"])

    def test_udp(self):
        self.compare("udp", [])

    def test_udp_compressed_signed(self):
        self.compare("udp", ["--compress", "--secret", "01WzaGPu"])


class SignatureVector(unittest.TestCase):
    """The test vector of SPEC section 3."""

    def test_vector(self):
        sys.path.insert(0, os.path.join(REPO, "python"))
        from loghog import _wire

        sig = _wire.signature(
            "01WzaGPu", "app-name", "web.foo", 1358363502, 12043,
            "If numbers aren\u2019t beautiful, I don\u2019t know what is. \u2013Paul Erd\u0151s",
        )
        self.assertEqual(sig, "396d1459bf34d782ebe156fd02b8e591")
        self.assertEqual(sig, _wire.signature(b"01WzaGPu", "app-name", "web.foo", 1358363502,
                                              12043, "If numbers aren\u2019t beautiful, I don\u2019t"
                                              " know what is. \u2013Paul Erd\u0151s"))


if __name__ == "__main__":
    unittest.main()
