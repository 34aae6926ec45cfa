"""A throwaway PostgreSQL cluster for tests: Debian's server binaries, a directory of its
own in /tmp, a free loopback port, trust authentication. Stopped and removed whatever
happens: no postgres process and no directory outlives it."""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql

SERVER_USER = "postgres"  # initdb refuses to run as root; Debian's server user runs it then
SKIP_REASON = "needs PostgreSQL (scripts/install --test)"
START_ATTEMPTS = 5  # a port found free can be taken by another process before the server binds it
TIMEOUT = 60.0  # seconds for any one step, generous for a busy machine

_databases = itertools.count(1)


def server_bin() -> Path | None:
    """The newest installed server's bin directory (initdb, pg_ctl), or None."""
    found = [
        path
        for path in Path("/usr/lib/postgresql").glob("*/bin")
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file()
    ]

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in path.parent.name.split(".") if part.isdigit())

    return max(found, key=version, default=None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def alive(pid: int) -> bool:
    """Whether the process runs: an exited one that nobody has reaped yet (a zombie) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def processes_in(directory: Path) -> list[int]:
    """The live processes whose working directory is in directory (a postmaster and
    every child of it work in their data directory)."""
    inside = str(directory.resolve())
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        cwd = cwd.removesuffix(" (deleted)")
        if (cwd == inside or cwd.startswith(inside + "/")) and alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def wait_until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
    """Poll condition until it holds or timeout seconds have passed; whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class ClusterError(RuntimeError):
    pass


class Cluster:
    """A running cluster of its own: initdb'd and started on construction, stopped and its
    directory removed by stop() or at the end of a with block. fsync is off unless asked
    for (tests of durability); kill() crashes the server, start() brings it back."""

    def __init__(self, *, fsync: bool = False) -> None:
        bin_dir = server_bin()
        if bin_dir is None:
            raise ClusterError(SKIP_REASON)
        self.bin = bin_dir
        self.fsync = fsync
        self.port = 0
        # Short (the socket's path must stay under 107 bytes), and outside pytest's 0700
        # directories, which the server user cannot enter.
        self.root = Path(tempfile.mkdtemp(prefix="dicomfs-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.log = self.root / "log"
        self._as_server_user = os.geteuid() == 0
        self._stopped = False
        try:
            if self._as_server_user:
                user = pwd.getpwnam(SERVER_USER)
                os.chown(self.root, user.pw_uid, user.pw_gid)
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                      "-E", "UTF8", "--locale=C.UTF-8", "-N")  # fmt: skip
            self._start_on_a_free_port()
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Cluster(port={self.port}, root={str(self.root)!r})"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        """A new, empty database of a name no other has; its URL."""
        name = f"test_{next(_databases)}_{secrets.token_hex(4)}"
        with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=int(TIMEOUT)) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    @property
    def pid(self) -> int | None:
        """The postmaster's pid, from its lock file, while there is one."""
        try:
            return int(self.data.joinpath("postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def start(self) -> None:
        """Start the server again on its port, after kill()."""
        if self._stopped:
            raise ClusterError(f"{self} was stopped and removed")
        if not self._pg_ctl_start():
            raise ClusterError(f"could not start {self}:\n{self._log_tail()}")

    def kill(self) -> None:
        """Crash the server (an immediate shutdown: no checkpoint, recovery at the next start);
        the cluster's files stay for start()."""
        if self._running():
            result = self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w",
                               "-t", str(int(TIMEOUT)), "stop", check=False)  # fmt: skip
            if result.returncode != 0:
                self._kill_postmaster()

    def stop(self) -> None:
        """Stop the server and remove its directory; again is a no-op. Whatever fails on the
        way, the postmaster is gone and the directory removed afterwards."""
        if self._stopped:
            return
        try:
            if self._running():
                result = self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w",
                                   "-t", str(int(TIMEOUT)), "stop", check=False)  # fmt: skip
                if result.returncode != 0:
                    self._kill_postmaster()
        finally:
            try:
                self._kill_postmaster()  # a no-op unless pg_ctl itself did not return
            finally:
                self._stopped = True
                shutil.rmtree(self.root, ignore_errors=True)
                if self.root.exists():
                    shutil.rmtree(self.root)  # again, to say why not

    def _running(self) -> bool:
        pid = self.pid
        return pid is not None and self._is_postmaster(pid)

    def _is_postmaster(self, pid: int) -> bool:
        """Whether pid is this cluster's postmaster, alive: it works in the data directory
        (a stale lock file's pid may since belong to any process)."""
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            return False
        return cwd == str(self.data.resolve()) and alive(pid)

    def _kill_postmaster(self) -> None:
        """Signal the postmaster named by the lock file, and only it: an immediate shutdown
        (it ends its children), SIGKILL if that does not end it; then wait for its children,
        which leave by themselves once it is gone."""
        pid = self.pid
        if pid is None or not self._is_postmaster(pid):
            self._wait_for_children()
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
        if not wait_until(lambda: not alive(pid), timeout=TIMEOUT / 2):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not alive(pid))
        self._wait_for_children()

    def _wait_for_children(self) -> None:
        if self.root.exists() and not wait_until(lambda: not processes_in(self.root)):
            raise ClusterError(f"postgres processes {processes_in(self.root)} outlived {self}")

    def _start_on_a_free_port(self) -> None:
        for _ in range(START_ATTEMPTS):
            self.port = free_port()
            before = self.log.stat().st_size if self.log.exists() else 0
            if self._pg_ctl_start():
                return
            self._kill_postmaster()  # in case pg_ctl gave up waiting on a server still starting
            said = self._log_tail(since=before)
            if "could not bind" not in said and "already in use" not in said:
                break
        raise ClusterError(f"could not start {self}:\n{self._log_tail()}")

    def _pg_ctl_start(self) -> bool:
        options = [
            f"-p {self.port}",
            f"-k {shlex.quote(str(self.root))}",
            "-c listen_addresses=127.0.0.1",
            f"-c fsync={'on' if self.fsync else 'off'}",
        ]
        result = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w",
                           "-t", str(int(TIMEOUT)), "-o", " ".join(options), "start",
                           check=False)  # fmt: skip
        return result.returncode == 0

    def _log_tail(self, since: int = 0) -> str:
        try:
            with self.log.open("rb") as log:
                log.seek(since)
                return log.read().decode(errors="replace")[-4000:]
        except FileNotFoundError:
            return "(no log)"

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / tool), *args]
        if self._as_server_user:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        # PG* variables (PGDATA, PGPORT, ...) of whoever runs the tests must not steer it.
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        result = subprocess.run(command, cwd=self.root, env=env, capture_output=True, text=True,
                                timeout=TIMEOUT * 2)  # fmt: skip
        if check and result.returncode != 0:
            raise ClusterError(
                f"{tool} {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )
        return result
