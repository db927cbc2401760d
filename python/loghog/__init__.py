"""loghog: send log messages to loghogd.

``from loghog import LoghogHandler`` is a drop-in for loghog 0.7 (same
constructor, same bytes on the wire) that sends from a background thread,
reconnects with backoff and drops the oldest messages (counting them in
``handler.dropped``) when the daemon stays away too long. ``loghog.Client``
is the same sender without :mod:`logging`.
"""

from ._client import Client
from .handler import LoghogHandler

__version__ = "0.8"
__all__ = ["Client", "LoghogHandler", "__version__"]
