"""Listings kept while the index is unchanged: any commit by another connection drops them
all, a listing taken before a change is never kept after it, and they stay bounded."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomfs.mount.listings import Listings
from dicomfs.store import views
from dicomfs.store.views import Attributes, Entry

SERIES = views.top("by-uid").child(("study",)).child(("series",))
OTHER = views.top("by-uid").child(("study",)).child(("other",))


def entries(count: int) -> list[Entry]:
    found = Attributes(False, 1, 0.0, None)
    return [Entry(f"{n:06d}.dcm", views.instance_file(n), found) for n in range(count)]


@pytest.fixture
def connections(tmp_path: Path) -> Iterator[tuple[sqlite3.Connection, sqlite3.Connection]]:
    """The mount's reading connection, and a writer's (another process's, as it may be)."""
    path = tmp_path / "index.sqlite"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("CREATE TABLE t (x)")
    reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    yield reader, writer
    reader.close()
    writer.close()


def keep_a_series(listings: Listings, reader: sqlite3.Connection) -> int:
    """A readdir's check and keep of one series; the version it was kept at."""
    version = listings.check(reader)
    listings.keep(SERIES, entries(3), version)
    return version


def test_a_listing_is_kept_until_another_connection_commits(
    connections: tuple[sqlite3.Connection, sqlite3.Connection],
) -> None:
    reader, writer = connections
    listings = Listings(check_every=0)
    version = keep_a_series(listings, reader)
    assert listings.check(reader) == version
    assert listings.get(SERIES) == entries(3)
    writer.execute("INSERT INTO t VALUES (1)")  # an instance received, say
    listings.check(reader)
    assert listings.get(SERIES) is None
    assert len(listings) == 0


def test_a_listing_taken_before_a_change_another_request_saw_is_not_kept(
    connections: tuple[sqlite3.Connection, sqlite3.Connection],
) -> None:
    reader, writer = connections
    listings = Listings(check_every=0)
    version = listings.check(reader)  # a readdir checks, then lists in a thread...
    writer.execute("INSERT INTO t VALUES (1)")  # ...the index changes meanwhile...
    listings.check(reader)  # ...and another readdir sees the change first
    listings.keep(SERIES, entries(3), version)
    assert listings.get(SERIES) is None


def test_listings_stop_being_kept_at_their_bound_and_start_again_after_a_change(
    connections: tuple[sqlite3.Connection, sqlite3.Connection],
) -> None:
    reader, writer = connections
    listings = Listings(limit=5, check_every=0)
    version = listings.check(reader)
    listings.keep(SERIES, entries(4), version)
    listings.keep(OTHER, entries(2), version)  # would pass the bound
    assert listings.get(OTHER) is None
    assert len(listings) == 4
    writer.execute("INSERT INTO t VALUES (1)")
    version = listings.check(reader)
    listings.keep(OTHER, entries(2), version)
    assert listings.get(OTHER) == entries(2)
    assert len(listings) == 2


def test_a_commit_is_seen_once_the_check_interval_has_passed(
    connections: tuple[sqlite3.Connection, sqlite3.Connection],
) -> None:
    """The version is not read on every directory a find opens, but a commit never
    stays unseen for longer than the interval."""
    reader, writer = connections
    now = [100.0]
    listings = Listings(check_every=0.05, clock=lambda: now[0])
    version = keep_a_series(listings, reader)
    writer.execute("INSERT INTO t VALUES (1)")
    now[0] += 0.01
    assert listings.check(reader) == version
    assert listings.get(SERIES) == entries(3)
    now[0] += 0.05
    assert listings.check(reader) != version
    assert listings.get(SERIES) is None


def test_a_write_of_this_process_is_seen_at_the_next_check(
    connections: tuple[sqlite3.Connection, sqlite3.Connection],
) -> None:
    """rm -r through the mount, then ls: what was removed is gone at once."""
    reader, writer = connections
    listings = Listings(check_every=3600)
    version = keep_a_series(listings, reader)
    writer.execute("INSERT INTO t VALUES (1)")
    listings.stale()
    assert listings.check(reader) != version
    assert listings.get(SERIES) is None
