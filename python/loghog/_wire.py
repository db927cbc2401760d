"""The loghog wire format (protocol version 1), byte for byte as loghog 0.7.

A frame is a 4-byte big-endian payload length, 4-byte big-endian flags
(``0x01`` = zlib-compressed payload) and the payload: the JSON object that
``json.dumps`` writes with its defaults (``", "`` and ``": "`` separators,
ASCII with ``\\uXXXX`` escapes, surrogate pairs beyond the BMP), keys in the
order ``version, app_id, module, stamp, nsecs, hostname, body[, signature]``.
"""

import hashlib
import hmac
import json
import struct
import zlib

#: Protocol version sent in every message.
VERSION = 1

#: Frame flag: the payload is a zlib (RFC 1950) stream.
FLAG_ZLIB = 0x01

_HEADER = struct.Struct("!LL")
_SIGNED_FIELDS = ("app_id", "module", "stamp", "nsecs", "body")


def signature(secret, app_id, module, stamp, nsecs, body):
    """Lowercase hex HMAC-MD5 of ``app_id + module + stamp + nsecs + body``.

    ``secret`` is a ``str`` (encoded as UTF-8, as 0.7 did) or ``bytes``.
    """
    key = secret if isinstance(secret, bytes) else secret.encode("utf-8")
    data = "".join("{0}".format(v) for v in (app_id, module, stamp, nsecs, body))
    return hmac.new(key, data.encode("utf-8"), hashlib.md5).hexdigest()


def encode(app_id, module, stamp, nsecs, hostname, body, secret=None, compression=False):
    """One complete frame (header + payload) as ``bytes``.

    ``stamp`` is whole UNIX seconds and ``nsecs`` the sub-second part in
    nanoseconds; a falsy ``secret`` means unsigned, as in 0.7.
    """
    data = {
        "version": VERSION,
        "app_id": app_id,
        "module": module,
        "stamp": stamp,
        "nsecs": nsecs,
        "hostname": hostname,
        "body": body,
    }
    if secret:
        data["signature"] = signature(secret, *(data[f] for f in _SIGNED_FIELDS))
    payload = json.dumps(data).encode("utf-8")
    flags = 0
    if compression:
        payload = zlib.compress(payload)
        flags |= FLAG_ZLIB
    return _HEADER.pack(len(payload), flags) + payload
