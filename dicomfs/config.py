"""Defaults and settings shared by the commands: each default is written here once.

The commands' --help shows these values and the README quotes them
(tests/test_config.py holds the two to them).
"""

from __future__ import annotations

import os
from pathlib import Path

# --- DICOM networking: the receiver and the puller ------------------------------------

AE_TITLE = "DICOMFS"  # ours, as a peer addresses us and as we call it
PORT = 11112  # the receiver's (and what a C-MOVE asks the peer to send to)
BIND = "0.0.0.0"  # every address of this machine
MAX_ASSOCIATIONS = 16  # served at once; more are refused as transient
# serve's receiver processes: one interpreter per core for associations at once. More
# than four gain little on a lab's few scanners and cost memory (net/processes.py).
RECEIVER_PROCESSES = min(4, len(os.sched_getaffinity(0)))  # the cores it may run on
# Seconds a sender may take, once connected: to send a complete association request,
# to send one PDU, and between PDUs (see the README's table of receiver timeouts).
ASSOCIATION_REQUEST_TIMEOUT = 10.0
PDU_TIMEOUT = 60.0
IDLE_TIMEOUT = 120.0
# Seconds a peer we call (a pull) may take to accept us, to answer, or between PDUs.
PEER_TIMEOUT = 30.0


def default_store() -> Path:
    """$DICOMFS_STORE, else $XDG_DATA_HOME/dicomfs/store (~/.local/share/dicomfs/store)."""
    if os.environ.get("DICOMFS_STORE"):
        return Path(os.environ["DICOMFS_STORE"])
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(data_home) / "dicomfs" / "store"


def default_mount() -> Path:
    """$DICOMFS_MOUNT, else ~/dicom."""
    if os.environ.get("DICOMFS_MOUNT"):
        return Path(os.environ["DICOMFS_MOUNT"])
    return Path(os.path.expanduser("~/dicom"))
