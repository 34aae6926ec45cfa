"""Named DICOM peers (scanners, PACS), kept in the store: STORE/.dicomfs/remotes.json."""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import re
import tempfile
from pathlib import Path

from ..store.index import INDEX_DIR

# AET@HOST:PORT, an IPv6 address in brackets: PACS@[fd00::4]:104
_ADDRESS = re.compile(
    r"^(?P<aet>[^@]+)@(?:\[(?P<ipv6>[^\]]+)\]|(?P<host>[^:@\[\]\s]+)):(?P<port>\d{1,5})$"
)
_AE_CHARACTERS = re.compile(r"^[\x20-\x5b\x5d-\x7e]+$")  # printable ASCII but backslash


class BadRemote(Exception):
    """A peer that cannot be used as written; the message says why."""


@dataclasses.dataclass(frozen=True)
class Remote:
    name: str
    aet: str
    host: str
    port: int
    move_destination: bool = False  # may receive what a C-MOVE to its AE title asks

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.aet}@{host}:{self.port}"


def ae_title(text: str) -> str:
    """An AE title as DICOM allows it: 1 to 16 printable ASCII characters but backslash,
    not only spaces. Leading and trailing spaces do not count (DICOM pads with them)."""
    title = text.strip(" ")
    if not title:
        raise ValueError(f"{text!r} is not an AE title: it is empty")
    if len(title) > 16:
        raise ValueError(f"{text!r} is longer than 16 characters, the most an AE title has")
    if not _AE_CHARACTERS.match(title):
        raise ValueError(
            f"{text!r} is not an AE title: letters, digits, spaces and printable "
            "punctuation only, no backslash"
        )
    return title


def parse(name: str, address: str) -> Remote:
    """'bay3t', 'BAY3T@10.1.2.3:104' -> Remote."""
    return dataclasses.replace(parse_address(address), name=check_name(name))


def check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise BadRemote(f"{name!r} is not a simple name (letters, digits, _ . -)")
    return name


def parse_address(address: str) -> Remote:
    """'BAY3T@10.1.2.3:104' or 'PACS@[::1]:104' -> a Remote named as it is written."""
    match = _ADDRESS.match(address.strip())
    if not match or not 0 < int(match["port"]) < 65536:
        raise BadRemote(
            f"{address!r} is not AET@HOST:PORT (for example BAY3T@10.1.2.3:104, "
            "or PACS@[fd00::4]:104)"
        )
    host = match["host"]
    if match["ipv6"]:
        try:
            host = str(ipaddress.IPv6Address(match["ipv6"]))
        except ValueError:
            raise BadRemote(f"{address!r}: [{match['ipv6']}] is not an IPv6 address") from None
    try:
        aet = ae_title(match["aet"])
    except ValueError as exc:
        raise BadRemote(f"{address!r}: {exc}") from None
    remote = Remote("", aet, host, int(match["port"]))
    return dataclasses.replace(remote, name=str(remote))


# Peers named in the configuration file (configure()): known to every lookup beside
# the store's own, and never written into it.
_configured: dict[str, Remote] = {}


def configure(peers: dict[str, Remote]) -> None:
    _configured.clear()
    _configured.update(peers)


def configured(name: str) -> bool:
    return name in _configured


def _path(store: Path) -> Path:
    return store / INDEX_DIR / "remotes.json"


def known(store: Path) -> dict[str, Remote]:
    """Every named peer: the store's, and the configuration file's."""
    return {**load(store), **_configured}


def load(store: Path) -> dict[str, Remote]:
    """The peers kept in the store (dicomfs remote add)."""
    path = _path(store)
    try:
        data = json.loads(path.read_text())
        return {name: Remote(name, **fields) for name, fields in data.items()}
    except FileNotFoundError:
        return {}
    except (ValueError, TypeError, AttributeError) as exc:  # edited by hand, say
        raise BadRemote(
            f"{path} is damaged ({exc}): mend it, or remove it and add the peers again"
        ) from None


def save(store: Path, remotes: dict[str, Remote]) -> None:
    """Write atomically: a half-written file never replaces the list."""
    path = _path(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, dict[str, object]] = {}
    for name, remote in remotes.items():
        data[name] = {"aet": remote.aet, "host": remote.host, "port": remote.port}
        if remote.move_destination:
            data[name]["move_destination"] = True
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="remotes-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # a failed write leaves nothing behind
        raise


def find(store: Path, name_or_address: str) -> Remote:
    """A peer by its name, or written out as AET@HOST:PORT."""
    remotes = known(store)
    if name_or_address in remotes:
        return remotes[name_or_address]
    if "@" in name_or_address:
        return parse_address(name_or_address)
    names = ", ".join(sorted(remotes)) or "none yet"
    raise BadRemote(
        f"no peer called {name_or_address!r} (known: {names}); "
        "add one with: dicomfs remote add NAME AET@HOST:PORT"
    )


def move_destination(store: Path, aet: str) -> Remote | None:
    """The peer a C-MOVE to this AE title sends to: one named a move destination."""
    for remote in known(store).values():
        if remote.move_destination and remote.aet == aet.strip(" "):
            return remote
    return None
