"""Named peers: AET@HOST:PORT as users write it, the list kept in the store, and
`dicomfs remote add/list/remove` as a user runs them."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dicomfs.net import remotes
from dicomfs.net.remotes import BadRemote, Remote

DICOMFS = Path(sys.executable).with_name("dicomfs")  # the command users run


@pytest.mark.parametrize(
    ("address", "aet", "host", "port"),
    [
        ("BAY3T@10.1.2.3:104", "BAY3T", "10.1.2.3", 104),
        ("PACS@pacs.example.org:11112", "PACS", "pacs.example.org", 11112),
        ("PACS@[fd00::4]:104", "PACS", "fd00::4", 104),
        ("PACS@[FD00:0:0::4]:104", "PACS", "fd00::4", 104),  # one spelling of one address
        ("PACS@[::1]:65535", "PACS", "::1", 65535),
        ("MY AE@host:1", "MY AE", "host", 1),  # a space inside a title is allowed
        (" PACS @host:104 ", "PACS", "host", 104),  # DICOM pads titles with spaces
    ],
)
def test_an_address_as_users_write_it(address: str, aet: str, host: str, port: int) -> None:
    remote = remotes.parse_address(address)
    assert (remote.aet, remote.host, remote.port) == (aet, host, port)
    assert remotes.parse_address(str(remote)) == remote  # it prints as it is written
    assert remote.name == str(remote)  # unnamed, it goes by its address


def test_an_ipv6_address_prints_in_brackets_and_a_name_goes_with_it() -> None:
    remote = remotes.parse("pacs", "PACS@[fd00::4]:104")
    assert remote == Remote("pacs", "PACS", "fd00::4", 104)
    assert str(remote) == "PACS@[fd00::4]:104"
    assert str(Remote("bay3t", "BAY3T", "10.1.2.3", 104)) == "BAY3T@10.1.2.3:104"


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("BAY3T@10.1.2.3", "is not AET@HOST:PORT"),  # no port
        ("10.1.2.3:104", "is not AET@HOST:PORT"),  # no AE title
        ("BAY3T@10.1.2.3:0", "is not AET@HOST:PORT"),
        ("BAY3T@10.1.2.3:65536", "is not AET@HOST:PORT"),
        ("BAY3T@10.1.2.3:123456", "is not AET@HOST:PORT"),
        ("BAY3T@10.1.2.3:http", "is not AET@HOST:PORT"),
        ("BAY3T@fd00::4:104", "is not AET@HOST:PORT"),  # IPv6 without brackets
        ("BAY3T@[fd00::zz]:104", "is not an IPv6 address"),
        ("BAY3T@[10.1.2.3]:104", "is not an IPv6 address"),
        ("A@B@host:104", "is not AET@HOST:PORT"),
        ("   @host:104", "is not AET@HOST:PORT"),
        ("SEVENTEEN_CHARS_X@host:104", "longer than 16 characters"),
        ("BAY\\3T@host:104", "no backslash"),
        ("BAY\x1b3T@host:104", "printable punctuation only"),
    ],
)
def test_a_bad_address_is_refused_saying_why(address: str, says: str) -> None:
    with pytest.raises(BadRemote) as caught:
        remotes.parse_address(address)
    assert says in str(caught.value)
    assert repr(address) in str(caught.value)  # the message quotes what was written


@pytest.mark.parametrize("name", ["", "bay 3t", "../pacs", "pacs/2", "bay3t@host", "pacs\n"])
def test_a_name_is_simple(name: str) -> None:
    with pytest.raises(BadRemote, match="is not a simple name"):
        remotes.parse(name, "PACS@host:104")


@pytest.mark.parametrize("name", ["bay3t", "PACS_2", "mr.scanner-1"])
def test_simple_names(name: str) -> None:
    assert remotes.parse(name, "PACS@host:104").name == name


# --- the list in the store ------------------------------------------------------------------


def test_peers_are_added_replaced_and_removed_and_found_by_name_or_address(store: Path) -> None:
    assert remotes.load(store) == {}
    bay3t = remotes.parse("bay3t", "BAY3T@10.1.2.3:104")
    pacs = remotes.parse("pacs", "PACS@[fd00::4]:104")
    remotes.save(store, {"bay3t": bay3t, "pacs": pacs})
    assert remotes.load(store) == {"bay3t": bay3t, "pacs": pacs}
    moved = remotes.parse("bay3t", "BAY3T@10.1.2.9:4242")
    remotes.save(store, {**remotes.load(store), "bay3t": moved})
    assert remotes.find(store, "bay3t") == moved
    assert remotes.find(store, "pacs") == pacs
    written_out = Remote("CT@10.1.2.5:104", "CT", "10.1.2.5", 104)
    assert remotes.find(store, "CT@10.1.2.5:104") == written_out
    known = remotes.load(store)
    del known["bay3t"]
    remotes.save(store, known)
    with pytest.raises(BadRemote, match=r"no peer called 'bay3t' \(known: pacs\)"):
        remotes.find(store, "bay3t")


def test_without_peers_find_says_how_to_add_one(store: Path) -> None:
    with pytest.raises(BadRemote, match=r"known: none yet.*dicomfs remote add NAME AET@HOST:PORT"):
        remotes.find(store, "pacs")


def test_the_list_is_private_to_its_owner_whatever_the_umask(store: Path) -> None:
    previous = os.umask(0)
    try:
        remotes.save(store, {"pacs": remotes.parse("pacs", "PACS@host:104")})
    finally:
        os.umask(previous)
    path = store / ".dicomfs" / "remotes.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_failed_write_leaves_the_list_as_it_was_and_nothing_else(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pacs = remotes.parse("pacs", "PACS@host:104")
    remotes.save(store, {"pacs": pacs})
    before = sorted(os.listdir(store / ".dicomfs"))

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        remotes.save(store, {"bay3t": remotes.parse("bay3t", "BAY3T@host:104")})
    monkeypatch.undo()
    assert remotes.load(store) == {"pacs": pacs}
    assert sorted(os.listdir(store / ".dicomfs")) == before  # no half-written copy left


# --- `dicomfs remote` -----------------------------------------------------------------------


def remote(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DICOMFS), "remote", *args, "--store", str(store)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def said(result: subprocess.CompletedProcess[str]) -> tuple[int, str, str]:
    return result.returncode, result.stdout, result.stderr


def test_remote_add_list_and_remove_say_what_they_did(store: Path) -> None:
    assert said(remote(store, "list")) == (
        0, "", "no peers yet (dicomfs remote add NAME AET@HOST:PORT)\n"
    )  # fmt: skip
    assert said(remote(store, "add", "bay3t", "BAY3T@10.1.2.3:104")) == (
        0, "added bay3t: BAY3T@10.1.2.3:104\n", ""
    )  # fmt: skip
    assert said(remote(store, "add", "pacs", "PACS@[FD00::4]:104")) == (
        0, "added pacs: PACS@[fd00::4]:104\n", ""
    )  # fmt: skip
    assert said(remote(store, "add", "bay3t", "BAY3T@10.1.2.3:104")) == (
        0, "bay3t is BAY3T@10.1.2.3:104 already: unchanged\n", ""
    )  # fmt: skip
    assert said(remote(store, "add", "bay3t", "BAY3T@10.1.2.9:4242")) == (
        0, "replaced bay3t: was BAY3T@10.1.2.3:104, now BAY3T@10.1.2.9:4242\n", ""
    )  # fmt: skip
    assert said(remote(store, "list")) == (
        0, "bay3t  BAY3T@10.1.2.9:4242\npacs  PACS@[fd00::4]:104\n", ""
    )  # fmt: skip
    assert said(remote(store, "remove", "bay3t")) == (0, "", "")
    assert said(remote(store, "list")) == (0, "pacs  PACS@[fd00::4]:104\n", "")
    assert said(remote(store, "remove", "bay3t")) == (1, "", "Error: no peer called 'bay3t'\n")
    stored = json.loads((store / ".dicomfs" / "remotes.json").read_text())
    assert stored == {"pacs": {"aet": "PACS", "host": "fd00::4", "port": 104}}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("bay 3t", "BAY3T@10.1.2.3:104"), "Invalid value for 'NAME': 'bay 3t' is not a simple"),
        (("bay3t", "BAY3T@10.1.2.3"), "Invalid value for 'AET@HOST:PORT': 'BAY3T@10.1.2.3' is"),
        (("bay3t", "BAY3T@10.1.2.3:99999"), "is not AET@HOST:PORT (for example"),
        (("bay3t", "BAY3T@[fd00::zz]:104"), "[fd00::zz] is not an IPv6 address"),
        (("bay3t", "A_VERY_LONG_AE_TITLE@host:104"), "longer than 16 characters"),
    ],
)
def test_remote_add_refuses_a_bad_peer_in_one_line_and_keeps_the_list(
    store: Path, args: tuple[str, str], says: str
) -> None:
    remote(store, "add", "pacs", "PACS@host:104")
    result = remote(store, "add", *args)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert says in line
    assert line.endswith("(see 'dicomfs remote add -h')")
    assert said(remote(store, "list")) == (0, "pacs  PACS@host:104\n", "")


def test_a_damaged_list_is_one_line_that_names_it(store: Path) -> None:
    path = store / ".dicomfs" / "remotes.json"
    path.parent.mkdir()
    path.write_text('{"pacs": {"aet": "PACS", "host": ')  # cut short by hand
    for args in (("list",), ("add", "bay3t", "BAY3T@host:104"), ("remove", "pacs")):
        result = remote(store, *args)
        assert result.returncode == 1
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"Error: {path} is damaged"), line
    assert path.read_text() == '{"pacs": {"aet": "PACS", "host": '  # left for the user to fix
