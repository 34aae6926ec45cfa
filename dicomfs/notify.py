"""Telling systemd how `dicomfs serve` is doing (sd_notify), without libsystemd.

The lab's unit is Type=notify: systemd holds the unit in 'activating' until serve
says READY=1, once it receives and its mount is up, so that what is ordered after it
(and `systemctl start`) finds both. STOPPING=1 says the stop has begun, and STATUS=
is the line `systemctl status` shows. Outside systemd ($NOTIFY_SOCKET unset) each
call does nothing; a failure to tell is logged, never raised: serve goes on.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def ready() -> None:
    _send("READY=1")


def stopping() -> None:
    _send("STOPPING=1")


def status(text: str) -> None:
    _send("STATUS=" + " ".join(text.split()))  # one line: a newline starts another field


def _send(message: str) -> None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):  # an abstract socket: its name starts with a NUL
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.debug("cannot tell systemd %r: %s", message, exc)
