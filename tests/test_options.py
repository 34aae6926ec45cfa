"""What users type as options: a bad value is one line that says what is wrong, and the
store named is the store used."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest

from dicomfs.cli import timeparse
from dicomfs.cli.types import Account, Moment
from dicomfs.store.index import Index

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


# Each bad value, and what the one line must name: the option, or the value itself.
@pytest.mark.parametrize(
    ("args", "named"),
    [
        ([*SERVE, "--aet", TOO_LONG], "--aet"),
        ([*SERVE, "--aet", ""], "--aet"),
        ([*SERVE, "--aet", "    "], "--aet"),
        ([*SERVE, "--aet", "A\\B"], "--aet"),
        ([*SERVE, "--aet", "ÄRZTE"], "--aet"),
        ([*SERVE, "--aet", "BAY\x1b3T"], "--aet"),
        ([*SERVE, "--allow-aet", TOO_LONG], "--allow-aet"),
        ([*SERVE, "--bind", "nonsense"], "--bind"),
        ([*SERVE, "--bind", "300.1.1.1"], "--bind"),
        ([*SERVE, "--port", "0"], "--port"),
        ([*SERVE, "--port", "70000"], "--port"),
        ([*SERVE, "--max-associations", "0"], "--max-associations"),
        ([*SERVE, "--retention", "5x"], "--retention"),
        ([*SERVE, "--retention", "-1d"], "--retention"),
        ([*SERVE, "--retention", "0s"], "--retention"),
        ([*SERVE, "--sweep-interval", "0m"], "--sweep-interval"),
        ([*SERVE, "--allow-address", "10.1.0.0/99"], "--allow-address"),
        ([*SERVE, "--allow-address", "nonsense"], "--allow-address"),
        ([*SERVE, "--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem"], "--tls"),
        ([*SERVE, "--mode", "9999"], "--mode"),
        ([*SERVE, "--mode", "1777"], "--mode"),
        ([*SERVE, "--uid", "no-such-user-here"], "--uid"),
        ([*SERVE, "--gid", "no-such-group-here"], "--gid"),
        ([*SERVE, "--uid", "-5"], "--uid"),
        (["mount", "--mode", "rwx", "/nonexistent/mnt"], "--mode"),
        (["mount", "--gid", "no-such-group-here", "/nonexistent/mnt"], "--gid"),
        (["pull", *PEER, "--aet", TOO_LONG], "--aet"),
        (["pull", *PEER, "--interval", "-1"], "--interval"),
        (["pull", *PEER, "--interval", "0", "--follow"], "--interval"),
        (["pull", *PEER, "--until-idle", "-5", "--follow"], "--until-idle"),
        (["pull", *PEER, "--bind", "nonsense"], "--bind"),
        (["pull", *PEER, "--port", "0"], "--port"),
        (["pull", "--from", f"{TOO_LONG}@127.0.0.1:104", "--study", "1.2.3"], TOO_LONG),
        (["pull", "--from", "PACS@127.0.0.1:99999", "--study", "1.2.3"], "99999"),
        (["pull", *PEER, "--patient-id", "12345"], "--patient-id"),
        (["remote", "add", "bay3t", f"{TOO_LONG}@10.1.2.3:104"], TOO_LONG),
        (["remote", "add", "bay3t", "A\\B@10.1.2.3:104"], "A\\\\B"),
        (["remote", "add", "bay3t", "BAY3T@10.1.2.3"], "BAY3T@10.1.2.3"),
        (["remote", "add", "bad name", "BAY3T@10.1.2.3:104"], "bad name"),
        (["expire", "--retention", "12h"], "--retention"),
        (["expire", "--retention", "abc"], "--retention"),
        (["expire", "--now", "nonsense", "--dry-run"], "--now"),
        (["keep", "--until", "2001-01-01", "1.2.3"], "--until"),
        (["keep", "--until", "nonsense", "1.2.3"], "--until"),
        (["keep", "--until", "0d", "1.2.3"], "--until"),
        (["audit", "--since", "nonsense"], "--since"),
        (["audit", "--event", "bogus"], "--event"),
        (["index", "-j", "0"], "--jobs"),
        (["find"], "TERMS"),
        (["no-such-command"], "no-such-command"),
    ],
)
def test_every_bad_option_value_is_a_one_line_error(
    indexed_store: Path, args: list[str], named: str
) -> None:
    result = run(*args, env={"DICOMFS_STORE": str(indexed_store)})
    assert named in assert_one_line_error(result)
    assert result.stdout == ""


# Options that do not go together, and arguments that are wrong: a usage error (exit 2)
# that names them, before anything runs.
@pytest.mark.parametrize(
    ("args", "named"),
    [
        ([*SERVE, "--tls-cert", __file__], "--tls-key"),
        ([*SERVE, "--tls-key", __file__], "--tls-cert"),
        (["keep", "--list", "--drop"], "--drop"),
        (["keep", "--list", "--until", "3d"], "--until"),
        (["keep", "--list", "1.2.3"], "1.2.3"),
        (["remote", "add", "bad name", "BAY3T@10.1.2.3:104"], "'NAME'"),
        (["remote", "add", "bay3t", "BAY3T@10.1.2.3"], "'AET@HOST:PORT'"),
        (["remote", "add", "bay3t", "BAY3T@[::zz]:104"], "'AET@HOST:PORT'"),
        (["remote", "add", "bay3t", "BAY3T@::1:104"], "'AET@HOST:PORT'"),
    ],
)
def test_a_usage_error_is_refused_before_anything_runs(
    tmp_path: Path, args: list[str], named: str
) -> None:
    result = run(*args, "--store", str(tmp_path))  # an empty directory: no index yet
    assert named in assert_one_line_error(result)
    assert result.returncode == 2
    assert list(tmp_path.iterdir()) == []  # nothing indexed, nothing written


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


def test_a_time_option_is_read_by_its_type_as_its_command_means_it() -> None:
    now = time.time()
    assert Moment(timeparse.moment).convert("1h", None, None) == pytest.approx(now - 3600, abs=60)
    ahead = Moment(timeparse.moment_ahead).convert("1h", None, None)
    assert ahead == pytest.approx(now + 3600, abs=60)
    until = Moment(timeparse.future_moment).convert("30d", None, None)
    assert until == pytest.approx(now + 30 * 86400, abs=60)
    with pytest.raises(click.BadParameter, match="'last week' is neither a date or time"):
        Moment(timeparse.moment).convert("last week", None, None)
    with pytest.raises(click.BadParameter, match="in the past"):
        Moment(timeparse.future_moment).convert("2001-01-01", None, None)


@pytest.mark.parametrize("command", ["find", "keep", "serve"])
def test_the_mount_option_is_spelled_as_the_mount_commands_argument(command: str) -> None:
    shown = run(command, "--help").stdout
    assert "--mount MOUNTPOINT" in shown
    assert "[MOUNTPOINT]" in run("mount", "--help").stdout.splitlines()[0]
    assert "[MOUNTPOINT]" in run("umount", "--help").stdout.splitlines()[0]


# --- one rule for the store -----------------------------------------------------------------

# Every command that uses a store, with arguments that would work on one.
COMMANDS = {
    "index": ["index"],
    "import": ["index", "SOURCE"],
    "serve": [*SERVE, "--bind", "127.0.0.1", "--port", "1"],
    "pull": ["pull", *PEER],
    "find": ["find", "doe"],
    "audit": ["audit"],
    "expire": ["expire", "--dry-run"],
    "keep": ["keep", "--list"],
    "check": ["check"],
    "mount": ["mount", "MOUNTPOINT"],
    "remote add": ["remote", "add", "pacs", "PACS@10.1.2.4:104"],
    "remote list": ["remote", "list"],
}
MAY_START_A_STORE = {"index", "import", "serve", "pull"}


def with_paths(args: list[str], tmp_path: Path) -> list[str]:
    source = tmp_path / "source"
    source.mkdir(exist_ok=True)
    places = {"SOURCE": str(source), "MOUNTPOINT": str(tmp_path / "mnt")}
    return [places.get(arg, arg) for arg in args]


@pytest.mark.parametrize("how", ["--store", "$DICOMFS_STORE"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_store_named_that_does_not_exist_is_an_error(
    tmp_path: Path, command: str, how: str
) -> None:
    typo = tmp_path / "typo"
    args = with_paths(COMMANDS[command], tmp_path)
    if how == "--store":
        result = run(*args, "--store", str(typo))
    else:
        result = run(*args, env={"DICOMFS_STORE": str(typo)})
    line = assert_one_line_error(result)
    assert f"store {typo} (from {how}) does not exist" in line
    assert ("--create" in line) if command in MAY_START_A_STORE else ("index --create" in line)
    assert not typo.exists()


def test_create_starts_a_store_where_it_is_named(tmp_path: Path) -> None:
    new = tmp_path / "new"
    result = run(*with_paths(COMMANDS["import"], tmp_path), "--create", "--store", str(new))
    assert result.returncode == 0, result.stderr
    assert (new / ".dicomfs" / "index.sqlite").is_file()
    assert run("find", "--store", str(new), "doe").stderr == "no study matches doe\n"


def test_an_existing_directory_is_a_store_the_index_starts_in(tmp_path: Path) -> None:
    result = run("index", "--store", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ".dicomfs" / "index.sqlite").is_file()


def test_the_default_store_is_made_on_first_use(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")}
    env.pop("DICOMFS_STORE", None)
    result = subprocess.run([sys.executable, "-m", "dicomfs", "find", "doe"], capture_output=True,
                            text=True, timeout=60, env=env)  # fmt: skip
    assert (result.returncode, result.stderr) == (1, "no study matches doe\n")
    assert (tmp_path / "data" / "dicomfs" / "store" / ".dicomfs" / "index.sqlite").is_file()
