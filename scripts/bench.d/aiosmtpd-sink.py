#!/usr/bin/env python3
"""Peer for scripts/bench: aiosmtpd with its stock Maildir handler
(aiosmtpd.handlers.Mailbox, which stores through Python's mailbox.Maildir;
note that mailbox.Maildir does not fsync).

usage: aiosmtpd-sink.py --listen 127.0.0.1:0 --maildir DIR [--max-size BYTES]
Logs "listening on 127.0.0.1:PORT" to stderr; on SIGTERM/SIGINT it stops and
exits 0 after logging "shutdown: stored N messages".
"""
import argparse
import asyncio
import signal
import sys

from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import SMTP


class CountingMailbox(Mailbox):
    stored = 0

    def handle_message(self, message):
        super().handle_message(message)
        CountingMailbox.stored += 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--maildir", required=True)
    ap.add_argument("--max-size", type=int, default=26214400)
    a = ap.parse_args()
    host, _, port = a.listen.rpartition(":")
    handler = CountingMailbox(a.maildir)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    def factory():
        return SMTP(handler, hostname="aiosmtpd-sink", data_size_limit=a.max_size,
                    enable_SMTPUTF8=True)

    server = loop.run_until_complete(loop.create_server(factory, host=host, port=int(port)))
    addr = server.sockets[0].getsockname()
    print(f"aiosmtpd-sink: listening on {addr[0]}:{addr[1]}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.run_until_complete(stop.wait())
    server.close()
    print(f"aiosmtpd-sink: shutdown: stored {CountingMailbox.stored} messages",
          file=sys.stderr, flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
