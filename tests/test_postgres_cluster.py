"""The throwaway PostgreSQL cluster the tests of the shared index run against
(tests/postgres.py): what a test using it relies on."""

from __future__ import annotations

import socket
from subprocess import CompletedProcess

import psycopg
import pytest

from . import postgres
from .postgres import Cluster, alive, processes_in, server_bin

free = postgres.free_port

pytestmark = pytest.mark.skipif(
    server_bin() is None, reason="needs PostgreSQL (scripts/install --test)"
)

TABLES = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"

seen_databases: set[str] = set()


@pytest.mark.parametrize("turn", [1, 2])
def test_each_test_gets_an_empty_database_of_its_own(postgres_url: str, turn: int) -> None:
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute(TABLES).fetchall() == []
        name = conn.execute("SELECT current_database()").fetchone()
        # Both turns make the same table: the second would fail in the first's database.
        conn.execute("CREATE TABLE marks (turn int)")
        conn.execute("INSERT INTO marks VALUES (%s)", (turn,))
    assert name is not None
    assert name[0] not in seen_databases
    seen_databases.add(name[0])


def test_a_table_written_is_read_back_in_its_database_only(
    postgres_cluster: Cluster, postgres_url: str
) -> None:
    rows = [(1, "MÜLLER^JÜRGEN", b"\x00\xff"), (2, "DOE^JOHN", b"")]
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE patients (id int PRIMARY KEY, name text, raw bytea)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO patients VALUES (%s, %s, %s)", rows)
    other = postgres_cluster.create_database()
    assert other != postgres_url
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT id, name, raw FROM patients ORDER BY id").fetchall() == rows
    with psycopg.connect(other) as conn:
        assert conn.execute(TABLES).fetchall() == []


def test_committed_rows_survive_a_crash_and_uncommitted_ones_do_not() -> None:
    cluster = Cluster(fsync=True)
    try:
        url = cluster.create_database()
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE received (n int)")
            conn.execute("INSERT INTO received SELECT generate_series(1, 1000)")
        pending = psycopg.connect(url)
        pending.execute("INSERT INTO received VALUES (-1)")  # a transaction left open
        port, postmaster = cluster.port, cluster.pid
        assert postmaster is not None

        cluster.kill()
        assert not alive(postmaster)
        assert processes_in(cluster.root) == []
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=5).close()
        pending.close()

        cluster.start()
        assert cluster.port == port
        assert cluster.pid not in (None, postmaster)
        with psycopg.connect(url) as conn:
            count, low, high = conn.execute(
                "SELECT count(*), min(n), max(n) FROM received"
            ).fetchone() or (None, None, None)
        assert (count, low, high) == (1000, 1, 1000)
    finally:
        cluster.stop()
    assert not cluster.root.exists()


def test_stop_leaves_no_postgres_process_and_no_directory() -> None:
    cluster = Cluster()
    try:
        postmaster = cluster.pid
        assert postmaster is not None
        assert alive(postmaster)
        assert postmaster in processes_in(cluster.root)  # the check below sees them
        url = cluster.create_database()
        idle = psycopg.connect(url)  # a client still connected does not hold the stop up
    finally:
        cluster.stop()
    assert not alive(postmaster)
    assert processes_in(cluster.root) == []
    assert not cluster.root.exists()
    idle.close()
    cluster.stop()  # again: nothing to do


class Boom(Exception):
    pass


def test_a_failing_test_still_stops_and_removes_its_cluster() -> None:
    clusters: list[tuple[Cluster, int | None]] = []

    def failing_test() -> None:
        with Cluster() as cluster:
            clusters.append((cluster, cluster.pid))
            raise Boom

    with pytest.raises(Boom):
        failing_test()
    [(cluster, postmaster)] = clusters
    assert postmaster is not None
    assert not alive(postmaster)
    assert not cluster.root.exists()


def test_a_stop_that_pg_ctl_cannot_do_ends_the_postmaster_by_its_pid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = Cluster()
    try:
        postmaster = cluster.pid
        assert postmaster is not None
        run, refused = cluster._run, []

        def pg_ctl_stop_fails(tool: str, *args: str, check: bool = True) -> CompletedProcess[str]:
            if "stop" in args:
                refused.append(args)
                return CompletedProcess([tool, *args], 1, "", "pg_ctl: could not stop")
            return run(tool, *args, check=check)

        monkeypatch.setattr(cluster, "_run", pg_ctl_stop_fails)
    finally:
        cluster.stop()
    assert refused  # pg_ctl was asked, and failed
    assert not alive(postmaster)
    assert processes_in(cluster.root) == []
    assert not cluster.root.exists()


def test_a_port_taken_before_the_server_binds_it_is_passed_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        offered = [taken]
        monkeypatch.setattr(postgres, "free_port", lambda: offered.pop() if offered else free())
        with Cluster() as cluster:
            assert cluster.port != taken
            with psycopg.connect(cluster.dsn()) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
