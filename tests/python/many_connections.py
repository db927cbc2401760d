#!/usr/bin/env python3
"""Hold many concurrent LogHog connections to one daemon (issue 12).

Run by tests/it/limits.rs (standard library only) as
    python3 tests/python/many_connections.py PORT N NET SEND

It raises its own open-files limit to the hard one, then opens up to N
TCP connections to 127.0.0.1:PORT (fewer if its limit does not allow N),
connection i from source address 127.0.NET.(2 + i % 100), and when SEND is
1 writes the frame "c{i} n0" on each right after connecting. It prints
    connected COUNT
and then answers one command per line on stdin:
    classify   -> "closed C open O": how many the daemon has closed (EOF or
                  reset, seen without waiting) and how many are still open
    send       -> writes "c{k} n0" on the k-th connection still open,
                  k = 0, 1, ...; prints "sent K"
    close-one  -> closes one open connection; prints "ok"
    exit (or end of input) -> closes everything and exits 0
A connection the daemon resets while it is still being set up counts as
closed.
"""

import json
import resource
import socket
import struct
import sys
import time


def frame(body):
    payload = json.dumps({
        "version": 1,
        "app_id": "app",
        "module": "",
        "stamp": int(time.time()),
        "nsecs": 0,
        "body": body,
    }).encode("utf-8")
    return struct.pack("!LL", len(payload), 0) + payload


def is_closed(s):
    s.setblocking(False)
    try:
        data = s.recv(16)
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.setblocking(True)
    if data:
        sys.exit("daemon sent %d bytes; it must never reply" % len(data))
    return True


def main():
    port, wanted, net, send = (int(a) for a in sys.argv[1:5])
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    n = min(wanted, hard - 32)
    conns = []
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(30)
        s.bind(("127.0.%d.%d" % (net, 2 + i % 100), 0))
        try:
            s.connect(("127.0.0.1", port))
            if send:
                s.sendall(frame("c%d n0" % i))
        except ConnectionResetError:
            pass  # refused at once, before connect() returned
        conns.append(s)
    print("connected %d" % n, flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "classify":
            closed = sum(1 for s in conns if is_closed(s))
            print("closed %d open %d" % (closed, len(conns) - closed), flush=True)
        elif cmd == "send":
            open_ = [s for s in conns if not is_closed(s)]
            for k, s in enumerate(open_):
                s.sendall(frame("c%d n0" % k))
            print("sent %d" % len(open_), flush=True)
        elif cmd == "close-one":
            for s in conns:
                if not is_closed(s):
                    conns.remove(s)
                    s.close()
                    break
            print("ok", flush=True)
        elif cmd == "exit":
            break
        else:
            sys.exit("unknown command %r" % cmd)
    for s in conns:
        s.close()


if __name__ == "__main__":
    main()
