"""A store several serves share, each on its machine (the index in PostgreSQL, as
index/binding.py marks it): what each keeps for itself in STORE/.dicomfs, under its
name.

With the index in the store's SQLite file, a store has one serve, and its lock,
its record of where it listens, its status socket and its spool are serve.lock,
serve.json, serve.sock and tmp/. With the index in PostgreSQL, every machine's
serve has its own: serve@NAME.lock, serve@NAME.json, serve@NAME.sock and tmp/NAME/,
NAME being this machine's host name, or serve's --name (two serves of one store on
one machine, each for its own scanners).
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from .index import INDEX_VARIABLE, binding

NAME_VARIABLE = "DICOMFS_NAME"  # serve's and status's --name set it for the command
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # a file name on every system


def serve_name(store: Path) -> str | None:
    """This machine's serve's name among those sharing the store; None when the index
    is the store's own SQLite file (one serve a store)."""
    if not (os.environ.get(INDEX_VARIABLE) or binding.in_postgresql(store)):
        return None
    name = os.environ.get(NAME_VARIABLE) or socket.gethostname().split(".")[0]
    return name if NAME.match(name) else "serve"


def own(store: Path, file_name: str) -> str:
    """The name in STORE/.dicomfs of this serve's own file: serve.lock as it is, or
    serve@NAME.lock."""
    name = serve_name(store)
    if name is None:
        return file_name
    stem, dot, suffix = file_name.partition(".")
    return f"{stem}@{name}{dot}{suffix}"


def own_spool(store: Path, tmp: str) -> str:
    """The spool directory of this serve (and of every command of this machine),
    below STORE/.dicomfs: tmp, or tmp/NAME. A serve empties its own at start."""
    name = serve_name(store)
    return tmp if name is None else f"{tmp}/{name}"
