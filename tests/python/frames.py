#!/usr/bin/env python3
"""Send a fixed set of log records through whichever ``loghog`` is importable.

Run by byte_identity_test.py, once with loghog 0.7 (its venv) and once with
0.8 (python/ on PYTHONPATH), as

    PYTHON frames.py --port P --mode tcp|udp [--compress] [--secret S]

Every record is the same in both runs, whatever the Python version: the
log record factory pins ``created`` and ``msecs`` (Python 3.13 computes
msecs differently from 3.8), ``time.time`` and ``socket.gethostname`` are
patched, and the bodies cover what the JSON encoding must get right:
non-ASCII, characters beyond the BMP (surrogate pairs), quotes,
backslashes, control characters, newlines, an empty body, a long
compressible one and a non-ASCII logger name.

Prints one line, ``loghog <version> <file>``, and exits non-zero if the
handler did not send everything.
"""

import argparse
import logging
import socket
import sys
import time

# (logger name, msecs, message)
RECORDS = [
    ("", 0.0, "root message"),
    ("web", 12.043, "caf\u00e9 \u2013 na\u00efve"),
    ("web.requests", 999.999, "emoji \U0001F600 and \U00010348 beyond the BMP"),
    ("web.requests.slow", 0.001, 'quotes " and \\ backslash / slash'),
    ("db", 500.5, "control \x01\x1f tab\t cr\r bell\x07 del\x7f"),
    ("db", 123.456789, "first line\nsecond line\n"),
    ("w\u00ebb", 7.0, ""),
    ("batch", 250.0, "long " + "0123456789abcdef" * 400),
    ("web", 1.5, "If numbers aren\u2019t beautiful, I don\u2019t know what is. \u2013Paul Erd\u0151s"),
]

#: UNIX seconds every record claims; msecs comes from RECORDS.
STAMP = 1358363502


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mode", choices=["tcp", "udp"], required=True)
    ap.add_argument("--compress", action="store_true")
    ap.add_argument("--secret", default=None)
    ap.add_argument("--default-hostname", action="store_true",
                    help="pass hostname=None (socket.gethostname() is patched)")
    args = ap.parse_args()

    time.time = lambda: STAMP + 0.25
    socket.gethostname = lambda: "patched-host"

    import loghog
    from loghog import LoghogHandler

    print("loghog %s %s" % (getattr(loghog, "__version__", "0.7"), loghog.__file__))

    pinned = iter(RECORDS)
    make_record = logging.getLogRecordFactory()

    def factory(*a, **kw):
        record = make_record(*a, **kw)
        _, msecs, _ = next(pinned)
        record.created = STAMP + msecs / 1000.0
        record.msecs = msecs
        return record

    logging.setLogRecordFactory(factory)

    handler = LoghogHandler(
        "byte-app",
        "127.0.0.1",
        args.port,
        args.mode == "tcp",
        args.secret,
        args.compress,
        None if args.default_hostname else "fixed-host",
    )
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    for name, _, message in RECORDS:
        logging.getLogger(name).warning("%s", message)
    root.removeHandler(handler)
    handler.close()
    unsent = len(handler.buffer)
    if unsent:
        print("%d message(s) left in the buffer" % unsent, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
