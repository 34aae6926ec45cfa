"""Defaults and settings shared by the commands."""

from __future__ import annotations

import os
from pathlib import Path


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
