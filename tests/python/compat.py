#!/usr/bin/env python3
"""Drive loghogd with the REAL published Python client (loghog 0.7 from PyPI).

Run by tests/it/compat.rs as
    $LOGHOG_PYTHON tests/python/compat.py --port P --mode tcp|udp|tcp-compress|tcp-signed
        [--app pyapp] [--secret S] [--count N]
    $LOGHOG_PYTHON tests/python/compat.py --port P --mode tls|tls-compress|tls-signed
        --pemfile CLIENT_PEM --cacert CA_CERT [--secret S] [--count N]

The tls modes pass ssl_info={'pemfile': ..., 'cacert': ...}, exactly as the
client's users do (SPEC §9); otherwise they are the tcp modes.

It logs, through the standard `logging` module and `loghog.LoghogHandler`:
  * logger 'root'               -> "root {mode}"
  * logger 'web.requests'       -> "request {mode} café 😀"  (json.dumps escapes it:
                                   \\u00e9 and the surrogate pair \\ud83d\\ude00)
  * logger 'web.requests.slow'  -> "slow {mode}\\nsecond line"
  * logger 'db'                 -> "db {mode}"
  * logger 'web'                -> "seq {mode} {i:04}" for i in 0..count
In the -signed modes it also sends "forged ..." messages with a wrong secret,
which the daemon must not write.

Exits non-zero if the client kept anything unsent in its buffer.
"""

import argparse
import logging
import sys

from loghog import LoghogHandler


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument(
        "--mode",
        required=True,
        choices=["tcp", "udp", "tcp-compress", "tcp-signed", "tls", "tls-compress", "tls-signed"],
    )
    ap.add_argument("--app", default="pyapp")
    ap.add_argument("--secret", default=None)
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--pemfile", default=None, help="client key + certificate (tls modes)")
    ap.add_argument("--cacert", default=None, help="CA certificate (tls modes)")
    args = ap.parse_args()

    mode = args.mode
    stream = mode != "udp"
    compression = mode.endswith("-compress")
    signed = mode.endswith("-signed")
    secret = args.secret if signed else None
    if signed and not secret:
        ap.error("--mode %s needs --secret" % mode)
    ssl_info = None
    if mode.startswith("tls"):
        if not (args.pemfile and args.cacert):
            ap.error("--mode %s needs --pemfile and --cacert" % mode)
        ssl_info = {"pemfile": args.pemfile, "cacert": args.cacert}

    handler = LoghogHandler(
        args.app,
        host=args.host,
        port=args.port,
        stream=stream,
        secret=secret,
        compression=compression,
        hostname="pyhost",
        ssl_info=ssl_info,
        print_debug=True,
    )
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)

    logging.getLogger().info("root %s", mode)
    logging.getLogger("web.requests").warning("request %s caf\u00e9 \U0001F600", mode)
    logging.getLogger("web.requests.slow").error("slow %s\nsecond line", mode)
    logging.getLogger("db").debug("db %s", mode)
    web = logging.getLogger("web")
    for i in range(args.count):
        web.info("seq %s %04d", mode, i)

    leftover = len(handler.buffer)
    root.removeHandler(handler)
    handler.close()

    if signed:
        forger = LoghogHandler(
            args.app,
            host=args.host,
            port=args.port,
            stream=True,
            secret="not-the-secret",
            hostname="pyhost",
            ssl_info=ssl_info,
            print_debug=True,
        )
        log = logging.getLogger("forged")
        log.propagate = False
        log.setLevel(logging.DEBUG)
        log.addHandler(forger)
        log.info("forged %s", mode)
        logging.getLogger("forged.web").info("forged web %s", mode)
        forger_left = len(forger.buffer)
        forger.close()
        # The sub-logger propagates to 'forged', which has the handler.
        leftover += forger_left

    if leftover:
        print("loghog client kept %d unsent message(s)" % leftover, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
