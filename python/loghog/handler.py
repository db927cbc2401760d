"""LoghogHandler: the :mod:`logging` handler, a drop-in for loghog 0.7's."""

import logging
import sys

from ._client import DEFAULT_CLOSE_TIMEOUT, Client


class LoghogHandler(Client, logging.Handler):
    """Sends every record to loghogd, as loghog 0.7's handler did.

    Same constructor (positional and keyword) and the same frames on the
    wire: module = the logger's name, body = the formatted record, stamp
    and nsecs from ``record.created`` and ``record.msecs``. Unlike 0.7,
    :meth:`emit` only queues the frame: a background thread sends it (see
    :class:`~loghog.Client` for the queue, its bounds and the extra
    keyword-only options).
    """

    # Python 3.12+: logging.shutdown() then calls close() alone, which flushes
    # with a bounded timeout.
    flushOnClose = False

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
        **options
    ):
        logging.Handler.__init__(self)
        Client.__init__(
            self,
            app_name,
            host,
            port,
            stream,
            secret,
            compression,
            hostname,
            ssl_info,
            max_buffer_size,
            print_debug,
            **options
        )

    def emit(self, record):
        """Encodes the record and queues it; never waits for the network.
        A record that cannot be formatted or encoded goes to
        :meth:`logging.Handler.handleError` (stderr), not to the caller."""
        try:
            frame = self.encode(
                record.name, self.format(record), int(record.created), int(record.msecs * 10**6)
            )
        except Exception:
            self.handleError(record)
            return
        self._enqueue(frame)

    def flush(self, timeout=None):
        """See :meth:`Client.flush`.

        When :func:`logging.shutdown` calls this (Python < 3.12 does, before
        :meth:`close`; so does ``logging.config`` on reconfiguration), it
        returns at once: the :meth:`close` that follows flushes with a
        bounded timeout, where an unlimited wait could hang the program.
        """
        if timeout is None and sys._getframe(1).f_code is logging.shutdown.__code__:
            return not self.buffer
        return Client.flush(self, timeout)

    def close(self, timeout=DEFAULT_CLOSE_TIMEOUT):
        """Flushes for at most ``timeout`` seconds, stops the sender and
        detaches from :mod:`logging`. Returns True if everything was sent."""
        try:
            return Client.close(self, timeout)
        finally:
            logging.Handler.close(self)
