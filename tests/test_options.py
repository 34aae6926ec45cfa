"""What users type as options: a bad value is one line that says what is wrong, and the
store named is the store used."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import sys
from pathlib import Path

import click
import pytest

from dicomfs.cli import Account
from dicomfs.index import Index

TOO_LONG = "THIS_AE_TITLE_IS_WAY_TOO_LONG"
PEER = ["--from", "PACS@127.0.0.1:1", "--study", "1.2.3"]
SERVE = ["serve", "--no-mount"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicomfs", *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )  # fmt: skip


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def indexed_store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("store")
    Index(store).close()
    return store


@pytest.mark.parametrize(
    "args",
    [
        [*SERVE, "--aet", TOO_LONG],
        [*SERVE, "--aet", ""],
        [*SERVE, "--aet", "    "],
        [*SERVE, "--aet", "A\\B"],
        [*SERVE, "--aet", "ÄRZTE"],
        [*SERVE, "--aet", "BAY\x1b3T"],
        [*SERVE, "--allow-aet", TOO_LONG],
        [*SERVE, "--bind", "nonsense"],
        [*SERVE, "--bind", "300.1.1.1"],
        [*SERVE, "--port", "0"],
        [*SERVE, "--port", "70000"],
        [*SERVE, "--max-associations", "0"],
        [*SERVE, "--retention", "5x"],
        [*SERVE, "--retention", "-1d"],
        [*SERVE, "--retention", "0s"],
        [*SERVE, "--sweep-interval", "0m"],
        [*SERVE, "--allow-address", "10.1.0.0/99"],
        [*SERVE, "--allow-address", "nonsense"],
        [*SERVE, "--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"],
        [*SERVE, "--mode", "9999"],
        [*SERVE, "--mode", "1777"],
        [*SERVE, "--uid", "no-such-user-here"],
        [*SERVE, "--gid", "no-such-group-here"],
        [*SERVE, "--uid", "-5"],
        ["mount", "--mode", "rwx", "/nonexistent/mnt"],
        ["mount", "--gid", "no-such-group-here", "/nonexistent/mnt"],
        ["pull", *PEER, "--aet", TOO_LONG],
        ["pull", *PEER, "--interval", "-1"],
        ["pull", *PEER, "--interval", "0", "--follow"],
        ["pull", *PEER, "--until-idle", "-5", "--follow"],
        ["pull", *PEER, "--bind", "nonsense"],
        ["pull", *PEER, "--port", "0"],
        ["pull", "--from", f"{TOO_LONG}@127.0.0.1:104", "--study", "1.2.3"],
        ["pull", "--from", "PACS@127.0.0.1:99999", "--study", "1.2.3"],
        ["pull", *PEER, "--patient-id", "12345"],
        ["remote", "add", "bay3t", f"{TOO_LONG}@10.1.2.3:104"],
        ["remote", "add", "bay3t", "A\\B@10.1.2.3:104"],
        ["remote", "add", "bay3t", "BAY3T@10.1.2.3"],
        ["remote", "add", "bad name", "BAY3T@10.1.2.3:104"],
        ["expire", "--retention", "abc"],
        ["expire", "--now", "nonsense", "--dry-run"],
        ["keep", "--until", "2001-01-01", "1.2.3"],
        ["keep", "--until", "nonsense", "1.2.3"],
        ["keep", "--until", "0d", "1.2.3"],
        ["audit", "--since", "nonsense"],
        ["audit", "--event", "bogus"],
        ["index", "-j", "0"],
        ["find"],
        ["no-such-command"],
    ],
)
def test_every_bad_option_value_is_a_one_line_error(indexed_store: Path, args: list[str]) -> None:
    result = run(*args, env={"DICOMFS_STORE": str(indexed_store)})
    assert_one_line_error(result)
    assert result.stdout == ""


def test_an_ae_title_error_says_what_an_ae_title_is(indexed_store: Path) -> None:
    line = assert_one_line_error(run(*SERVE, "--store", str(indexed_store), "--aet", TOO_LONG))
    assert "'--aet'" in line
    assert "16 characters" in line


def test_user_and_group_by_name_or_number() -> None:
    me = pwd.getpwuid(os.getuid())
    group = grp.getgrgid(os.getgid())
    assert Account("user").convert(me.pw_name, None, None) == me.pw_uid
    assert Account("user").convert(str(me.pw_uid), None, None) == me.pw_uid
    assert Account("group").convert(group.gr_name, None, None) == group.gr_gid
    assert Account("group").convert("1200", None, None) == 1200
    with pytest.raises(click.BadParameter, match="no group 'no-such-group-here'"):
        Account("group").convert("no-such-group-here", None, None)
