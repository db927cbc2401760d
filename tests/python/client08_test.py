#!/usr/bin/env python3
"""loghog 0.8 against the real daemon (target/release/loghogd).

    PYTHONPATH=python python3.X tests/python/client08_test.py [-v]

(or with loghog 0.8 installed). Over TCP, UDP and TLS, signed and
compressed, through daemon restarts and outages; every check reads the
files the daemon wrote, or its counters. Nothing here is skipped.
"""

import logging
import os
import subprocess
import sys
import time
import unittest
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import loghog  # noqa: E402
from daemon import (  # noqa: E402
    Daemon, Setup, cert, free_port, records, wait_for, wait_for_records)
from loghog import Client, LoghogHandler  # noqa: E402

SECRET = "py-s3cret \u00e9"
HOST = "pyhost"


def facilities(secret=None):
    """pyapp with web and web.requests sub-facilities."""
    sec = "secret = %s\n" % secret if secret else ""
    return "".join(
        "[%s]\nrotate = daily\nbackup_count = 3\n%s\n" % (name, sec if name == "pyapp" else "")
        for name in ("pyapp", "pyapp:web", "pyapp:web.requests")
    )


class DaemonTest(unittest.TestCase):
    """Starts one daemon per test; cleans up whatever happens."""

    def start(self, secret=None, listen="127.0.0.1:0", server_extra=""):
        self.setup = Setup(facilities(secret), listen, server_extra)
        self.addCleanup(self.setup.cleanup)
        return self.daemon()

    def daemon(self):
        """(Re)starts the daemon on this test's setup."""
        d = Daemon(self.setup)
        self.addCleanup(d.kill)
        return d

    def attach(self, handler):
        """Puts ``handler`` on the root logger for this test."""
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        root = logging.getLogger()
        root.setLevel(logging.DEBUG)
        root.addHandler(handler)
        self.addCleanup(root.removeHandler, handler)
        self.addCleanup(handler.close, 1.0)
        return handler

    def send_standard(self, tag, count):
        """Logs the standard set; returns the expected records per file."""
        logging.getLogger().info("root %s", tag)
        logging.getLogger("web.requests").warning("request %s caf\u00e9 \U0001F600", tag)
        logging.getLogger("web.requests.slow").error("slow %s\nsecond line", tag)
        logging.getLogger("db").debug("db %s", tag)
        for i in range(count):
            logging.getLogger("web").info("seq %s %04d", tag, i)
        return {
            "pyapp/root.log": [(HOST, "INFO root %s" % tag), (HOST, "DEBUG db %s" % tag)],
            "pyapp/web.requests.log": [
                (HOST, "WARNING request %s caf\u00e9 \U0001F600" % tag),
                (HOST, "ERROR slow %s\nsecond line" % tag),
            ],
            "pyapp/web.log": [(HOST, "INFO seq %s %04d" % (tag, i)) for i in range(count)],
        }

    def check_files(self, want, ordered=True):
        """Waits for every expected record, then compares each file exactly."""
        for rel, recs in want.items():
            wait_for_records(self.setup.log(rel), len(recs))
        self.assertEqual(self.setup.log_files(), sorted(want))
        for rel, recs in want.items():
            got = records(self.setup.log(rel))
            if ordered:
                self.assertEqual(got, recs, rel)
            else:
                self.assertEqual(sorted(got), sorted(recs), rel)


class Delivery(DaemonTest):
    """Every transport and option, checked in the files on disk."""

    def test_version(self):
        self.assertEqual(loghog.__version__, "0.8")

    def test_tcp(self):
        d = self.start()
        h = self.attach(LoghogHandler("pyapp", host="127.0.0.1", port=d.tcp, hostname=HOST))
        want = self.send_standard("tcp", 300)
        self.assertTrue(h.flush(10))
        self.assertEqual(len(h.buffer), 0)
        self.check_files(want)
        stats = d.stop()
        self.assertEqual(stats["written"], 304)
        self.assertEqual(stats["connections"], 1, "one connection for all 304 messages")
        self.assertEqual(h.dropped, 0)

    def test_udp_positional_arguments(self):
        d = self.start()
        # 0.7's constructor, every argument positional.
        h = self.attach(LoghogHandler("pyapp", "127.0.0.1", d.udp, False, None, False, HOST,
                                      None, 1024, False))
        want = self.send_standard("udp", 50)
        self.assertTrue(h.flush(10))
        self.check_files(want, ordered=False)
        self.assertEqual(d.stop()["written"], 54)

    def test_tcp_compressed_signed_and_forged(self):
        d = self.start(secret=SECRET)
        h = self.attach(LoghogHandler("pyapp", port=d.tcp, host="127.0.0.1", hostname=HOST,
                                      secret=SECRET, compression=True))
        want = self.send_standard("signed", 40)
        self.assertTrue(h.flush(10))
        forger = Client("pyapp", "127.0.0.1", d.tcp, secret="not-the-secret", hostname=HOST)
        forger.log("web", "forged")
        forger.log("", "forged root")
        self.assertTrue(forger.close())
        self.check_files(want)
        stats = d.stop()
        self.assertEqual(stats["written"], 44)
        self.assertEqual(stats["bad_signature"], 2, "the forged messages were refused")
        self.assertEqual(stats["bad_frames"], 0)

    def test_client_api(self):
        d = self.start()
        c = Client("pyapp", "127.0.0.1", d.tcp, hostname=HOST, compression=True)
        c.log("web", "plain client \u00e9")
        c.log("", "to the root")
        self.assertTrue(c.close())
        self.check_files({
            "pyapp/web.log": [(HOST, "plain client \u00e9")],
            "pyapp/root.log": [(HOST, "to the root")],
        })
        d.stop()

    def tls_setup(self, ip="127.0.0.1"):
        return self.start(server_extra="listen_ipv4_ssl = %s:0\npemfile = %s\ncacert = %s\n" % (
            ip, cert("loghog-server.pem"), cert("loghog-ca.cert")))

    def test_tls(self):
        d = self.tls_setup()
        ssl_info = {"pemfile": cert("client.pem"), "cacert": cert("loghog-ca.cert")}
        h = self.attach(LoghogHandler("pyapp", host="localhost", port=d.tls, hostname=HOST,
                                      ssl_info=ssl_info, secret=None, compression=True))
        want = self.send_standard("tls", 200)
        self.assertTrue(h.flush(10))
        self.check_files(want)
        h.close()
        stats = d.stop()
        self.assertEqual(stats["written"], 204)
        self.assertEqual(stats["tls_refused"], 0)
        self.assertEqual(stats["connections"], 1)
        self.assertNotIn("connection closed on error", d.stderr())

    def test_tls_server_name_is_checked(self):
        # The server certificate names localhost and 127.0.0.1, not 127.0.0.2.
        d = self.tls_setup("127.0.0.2")
        ssl_info = {"pemfile": cert("client.pem"), "cacert": cert("loghog-ca.cert")}
        strict = Client("pyapp", "127.0.0.2", d.tls, ssl_info=ssl_info, hostname=HOST)
        strict.log("", "must not arrive")
        self.assertFalse(strict.flush(1.0), "connected to a server whose name does not match")
        strict.close(0)
        lax = Client("pyapp", "127.0.0.2", d.tls, hostname=HOST,
                     ssl_info=dict(ssl_info, check_hostname=False))
        lax.log("", "chain-only, as 0.7")
        self.assertTrue(lax.close())
        self.check_files({"pyapp/root.log": [(HOST, "chain-only, as 0.7")]})
        self.assertEqual(d.stop()["written"], 1)

    def test_tls_foreign_certificate_refused(self):
        d = self.tls_setup()
        ssl_info = {"pemfile": cert("other-client.pem"), "cacert": cert("loghog-ca.cert")}
        c = Client("pyapp", "localhost", d.tls, ssl_info=ssl_info, hostname=HOST)
        c.log("", "refused")
        start = time.monotonic()
        self.assertFalse(c.flush(1.0))
        self.assertLess(time.monotonic() - start, 3.0)
        self.assertEqual(len(c.buffer), 1, "the message stays queued")
        c.close(0)
        stats = d.stop()
        self.assertGreaterEqual(stats["tls_refused"], 1)
        self.assertEqual(stats["written"], 0)


class Resilience(DaemonTest):
    """Outages, restarts, bounds, and exit."""

    def test_restart_mid_stream(self):
        port = free_port()
        d = self.start(listen="127.0.0.1:%d" % port)
        h = self.attach(LoghogHandler("pyapp", "127.0.0.1", port, hostname=HOST,
                                      max_buffer_size=100))
        web = logging.getLogger("web")
        for i in range(10):
            web.info("m %03d", i)
        self.assertTrue(h.flush(10))
        d.stop()

        # Down: 150 more; the 50 oldest of them are dropped, the rest wait.
        start = time.monotonic()
        for i in range(10, 160):
            web.info("m %03d", i)
        self.assertLess(time.monotonic() - start, 1.0, "emit waited for the network")
        self.assertEqual(h.dropped, 50)
        self.assertEqual(len(h.buffer), 100)
        start = time.monotonic()
        self.assertFalse(h.flush(0.5), "flush claimed success with the daemon down")
        self.assertGreaterEqual(time.monotonic() - start, 0.5)
        self.assertLess(time.monotonic() - start, 1.5)

        d = self.daemon()
        self.assertTrue(h.flush(15), "the buffered messages were not sent after the restart")
        self.assertEqual(h.dropped, 50)
        want = [(HOST, "INFO m %03d" % i) for i in list(range(10)) + list(range(60, 160))]
        self.check_files({"pyapp/web.log": want})
        self.assertEqual(d.stop()["written"], 100)

    def test_daemon_down(self):
        port = free_port()
        seen = []

        class Capture(logging.Handler):
            def emit(self, record):
                seen.append(record.getMessage())

        capture = Capture()
        logging.getLogger().addHandler(capture)
        self.addCleanup(logging.getLogger().removeHandler, capture)
        h = self.attach(LoghogHandler("pyapp", "127.0.0.1", port, max_buffer_size=10,
                                      print_debug=False))
        start = time.monotonic()
        for i in range(1000):
            logging.getLogger("web").info("x %d", i)
        self.assertLess(time.monotonic() - start, 2.0, "emit waited for the network")
        self.assertEqual(h.dropped, 990)
        self.assertEqual([m for m in seen if not m.startswith("x ")], [],
                         "the client logged through logging")
        start = time.monotonic()
        self.assertFalse(h.flush(0.3))
        elapsed = time.monotonic() - start
        self.assertTrue(0.3 <= elapsed < 1.0, elapsed)
        start = time.monotonic()
        self.assertFalse(h.close(0.2))
        self.assertLess(time.monotonic() - start, 1.5)

    def test_byte_bound(self):
        c = Client("pyapp", "127.0.0.1", free_port(), max_buffer_bytes=10000)
        for _ in range(100):
            c.log("", "y" * 900)  # each frame about 1 KB
        self.assertLessEqual(sum(map(len, c.buffer)), 10000)
        self.assertEqual(c.dropped + len(c.buffer), 100)
        self.assertGreater(c.dropped, 80)
        c.log("", "z" * 70000)  # over max_message_size: dropped, never queued
        self.assertFalse(any(b"zzz" in f for f in c.buffer))
        c.close(0)

    def test_fork(self):
        d = self.start()
        h = self.attach(LoghogHandler("pyapp", "127.0.0.1", d.tcp, hostname=HOST))
        web = logging.getLogger("web")
        web.info("parent before fork")  # maybe still queued at the fork
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
            pid = os.fork()
        if pid == 0:  # never return into the test runner
            code = 1
            try:
                web.info("from the child")
                code = 0 if h.close(10) and not h.dropped else 1
            finally:
                os._exit(code)
        self.assertEqual(os.waitpid(pid, 0)[1], 0, "the child could not send")
        web.info("parent after fork")
        self.assertTrue(h.flush(10))
        got = wait_for_records(self.setup.log("pyapp/web.log"), 3)
        self.assertEqual(sorted(got), sorted((HOST, "INFO " + b) for b in (
            "parent before fork", "from the child", "parent after fork")))
        self.assertEqual(d.stop()["written"], 3, "a message was sent twice")

    def run_child(self, port, code):
        """Runs ``code`` in a fresh interpreter with loghog importable; returns
        (seconds it took, CompletedProcess)."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [os.path.dirname(os.path.dirname(loghog.__file__)), env.get("PYTHONPATH", "")])
        prog = ("import logging, loghog\n"
                "h = loghog.LoghogHandler('pyapp', '127.0.0.1', %d, hostname=%r)\n"
                "logging.getLogger().addHandler(h)\n"
                "logging.getLogger().setLevel(logging.INFO)\n" % (port, HOST)) + code
        start = time.monotonic()
        out = subprocess.run([sys.executable, "-c", prog], env=env, timeout=30,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             universal_newlines=True)
        return time.monotonic() - start, out

    def test_exit_sends_the_queue(self):
        d = self.start()
        took, out = self.run_child(
            d.tcp, "for i in range(500): logging.getLogger('web').info('exit %d', i)\n")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stderr, "")
        self.assertLess(took, 4.0)
        self.check_files({"pyapp/web.log": [(HOST, "exit %d" % i) for i in range(500)]})
        self.assertEqual(d.stop()["written"], 500)

    def test_exit_with_daemon_down_is_bounded(self):
        took, out = self.run_child(
            free_port(), "logging.getLogger('web').info('lost')\n"
            "logging.config = __import__('logging.config').config\n"
            "logging.config.dictConfig({'version': 1})  # logging.shutdown of our handler\n")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stderr, "", "printed without print_debug")
        self.assertLess(took, 8.0, "interpreter exit waited too long")


if __name__ == "__main__":
    unittest.main()
