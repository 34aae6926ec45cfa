"""Several machines: the index in PostgreSQL against the SQLite file, in one run.

- the main corpus's index copied into a throwaway PostgreSQL cluster (`dicomfs index
  --to`), then `dicomfs find` and the first `ls` of each view with one and the other;
- four storescu associations into one serve on SQLite, and into two serves (two
  associations each) sharing a store and the index in PostgreSQL.

The cluster is Debian's server started for the run on a loopback port (as the tests
start it, tests/postgres.py), with fsync on: a commit is on disk as a lab's is.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench_ingest import free_port, send, stop, wait_for_port, write_corpora

from dicomfs.store import search
from dicomfs.store.index import INDEX_VARIABLE, Index, binding
from dicomfs.store.index.to_postgres import copy_index
from dicomfs.store.views import VIEW_NAMES

sys.path.insert(0, str(Path(__file__).parent.parent))
from tests.postgres import Cluster, server_bin

ROUNDS = 3  # of the receivers
FIND_ROUNDS = 7  # a find's search takes milliseconds, the command's start-up more
FIND_GOAL = 2.0  # PostgreSQL within 2x of SQLite
LISTING_GOAL = 2.0
RECEIVERS_GOAL = 1.5  # two receivers on PostgreSQL against one on SQLite


def bench_several(work: Path, store: Path | None) -> None:
    """store: the main corpus, indexed (for find and the views); None skips that part."""
    if server_bin() is None:
        print("several machines: skipped (needs PostgreSQL: scripts/install --test)")
        return
    print("several machines, the index in PostgreSQL against SQLite:")
    with Cluster(fsync=True) as cluster:
        if store is not None:
            _reads(store, work, cluster.create_database())
        _receivers(work, cluster)


@contextlib.contextmanager
def _index(url: str | None, store: Path | None = None) -> Iterator[None]:
    """Every dicomfs started in the block uses this index (None: the store's SQLite).
    The store's mark that its index is in PostgreSQL (index/binding.py) is set aside
    for SQLite's runs: the benchmark alone keeps both indexes of one store."""
    before = os.environ.pop(INDEX_VARIABLE, None)
    if url is not None:
        os.environ[INDEX_VARIABLE] = url
    mark = binding.marker(store) if store is not None else None
    aside = mark.with_name("index-in-postgresql.aside") if mark is not None else None
    if url is None and mark is not None and aside is not None and mark.exists():
        mark.rename(aside)
    try:
        yield
    finally:
        if aside is not None and mark is not None and aside.exists():
            aside.rename(mark)
        os.environ.pop(INDEX_VARIABLE, None)
        if before is not None:
            os.environ[INDEX_VARIABLE] = before


def _seconds(*command: str) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _reads(store: Path, work: Path, url: str) -> None:
    binding.marker(store).unlink(missing_ok=True)  # an earlier run's: its database is gone
    try:
        _timed_reads(store, work, url)
    finally:  # the database goes with the cluster: the store is SQLite's again
        binding.marker(store).unlink(missing_ok=True)


def _timed_reads(store: Path, work: Path, url: str) -> None:
    copied = copy_index(store, url)
    print(f"  dicomfs index --to of {copied.rows.get('instances', 0):,} instances "
          f"(copy and check)  {copied.seconds:6.1f} s ({copied.total:,} rows)")  # fmt: skip
    dicomfs = [sys.executable, "-m", "dicomfs"]
    patient = max(0, sum(1 for _ in store.glob("p*")) // 2 - 1)
    engines = (("SQLite", ""), ("PostgreSQL", url))
    for term in (f"ID{patient:05d}", f"patient{patient:05d}"):
        # The command as a user types it, in turn with each engine, the median of rounds.
        whole: dict[str, list[float]] = {name: [] for name, _ in engines}
        for round_ in range(FIND_ROUNDS):
            for name, using in engines[:: 1 if round_ % 2 == 0 else -1]:
                with _index(using or None, store):
                    whole[name].append(_seconds(*dicomfs, "find", "--store", str(store), term))
        # Its own part: the index's search and the studies' summaries, connected once.
        own = {}
        for name, using in engines:
            with _index(using or None, store):
                own[name] = _find_part(store, using, term)
        lite, pg = statistics.median(whole["SQLite"]), statistics.median(whole["PostgreSQL"])
        print(f"  dicomfs find {term:14s} PostgreSQL/SQLite {pg / lite:5.2f}  (goal <= {FIND_GOAL};"
              f" the command, median of {FIND_ROUNDS}: {lite:.3f} s, {pg:.3f} s; its search"
              f" alone, best of {FIND_ROUNDS}: {own['SQLite'] * 1000:.1f} ms,"
              f" {own['PostgreSQL'] * 1000:.1f} ms)")  # fmt: skip
    listings = {}
    for name, using in (("SQLite", None), ("PostgreSQL", url)):
        with _index(using, store), _mounted(store, work / f"mnt-{name}") as mnt:
            listings[name] = {view: _seconds("ls", str(mnt / view)) for view in VIEW_NAMES}
    for view in VIEW_NAMES:
        lite, pg = listings["SQLite"][view], listings["PostgreSQL"][view]
        print(f"  first ls {view:12s} PostgreSQL/SQLite {pg / lite:5.2f}  (goal <= {LISTING_GOAL};"
              f" {lite:.3f} s, {pg:.3f} s)")  # fmt: skip


def _find_part(store: Path, url: str, term: str) -> float:
    """Seconds, best of FIND_ROUNDS, of find's own work on an index already open."""
    with Index(store, url=url, readonly=True) as index:
        best = float("inf")
        for _ in range(FIND_ROUNDS):
            start = time.perf_counter()
            index.study_summaries(search.matching_studies(index, [term]))
            best = min(best, time.perf_counter() - start)
    return best


@contextlib.contextmanager
def _mounted(store: Path, mnt: Path) -> Iterator[Path]:
    mnt.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "dicomfs", "mount", "--store", str(store), str(mnt)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (mnt / "by-patient").is_dir():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the mount of {store} did not come up")
            time.sleep(0.05)
        yield mnt
    finally:
        stop(process, 60)
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)


def _receivers(work: Path, cluster: Cluster) -> None:
    workload = write_corpora(work / "ingest-corpus")[2]  # 4 associations of 128 KB MR
    runs = Path(tempfile.mkdtemp(prefix="several-", dir=work))
    one: list[Sent] = []
    two: list[Sent] = []
    try:
        for round_ in range(ROUNDS):
            order: list[Callable[[], Sent]] = [
                lambda: _one_on_sqlite(runs, workload.associations),
                lambda: _two_on_postgres(runs, workload.associations, cluster.create_database()),
            ]
            if round_ % 2:
                order.reverse()
            sent = [run() for run in order]
            one.append(sent[0] if round_ % 2 == 0 else sent[1])
            two.append(sent[1] if round_ % 2 == 0 else sent[0])
    finally:
        shutil.rmtree(runs, ignore_errors=True)
    rate = {name: statistics.median(workload.count / s.seconds for s in sent)
            for name, sent in (("one", one), ("two", two))}  # fmt: skip
    cpu = {name: statistics.median(s.cpu_seconds * 1000 / workload.count for s in sent)
           for name, sent in (("one", one), ("two", two))}  # fmt: skip
    ratios = sorted(a.seconds / b.seconds for a, b in zip(one, two, strict=True))  # rates: b / a
    cores = os.cpu_count() or 1
    print(f"  {workload.label}:")
    print(f"    one serve, SQLite          {rate['one']:6.0f} instances/s, "
          f"the machine's CPU {cpu['one']:.2f} ms an instance")  # fmt: skip
    print(f"    two serves, PostgreSQL     {rate['two']:6.0f} instances/s, "
          f"the machine's CPU {cpu['two']:.2f} ms an instance")  # fmt: skip
    print(f"    two on PostgreSQL / one on SQLite  {statistics.median(ratios):5.2f} "
          f"(rounds {ratios[0]:.2f}-{ratios[-1]:.2f})   (goal >= {RECEIVERS_GOAL})")  # fmt: skip
    needed = RECEIVERS_GOAL * rate["one"] * cpu["one"] / 1000
    print(f"    {RECEIVERS_GOAL}x one on SQLite, at SQLite's CPU an instance (senders "
          f"included), would keep {needed:.1f} cores busy; this host has {cores}")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Sent:
    seconds: float
    cpu_seconds: float  # of the whole machine, while it was sent


def _machine_cpu_seconds() -> float:
    """CPU time every core spent busy since boot (/proc/stat: all but idle and iowait)."""
    ticks = [int(field) for field in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def _sent(halves: list[tuple[int, list[list[Path]]]]) -> Sent:
    """Each half of the associations to its port, at once."""
    with concurrent.futures.ThreadPoolExecutor(len(halves)) as pool:
        busy, start = _machine_cpu_seconds(), time.perf_counter()
        sending = [pool.submit(send, half, port, "DICOMFS", True) for port, half in halves]
        for sent in sending:
            sent.result()
        return Sent(time.perf_counter() - start, _machine_cpu_seconds() - busy)


def _one_on_sqlite(runs: Path, associations: list[list[Path]]) -> Sent:
    store = Path(tempfile.mkdtemp(prefix="sqlite-", dir=runs))
    with _index(None), _serving(store, "one") as port:
        return _sent([(port, associations)])


def _two_on_postgres(runs: Path, associations: list[list[Path]], url: str) -> Sent:
    """The same associations shared out between two serves of one store and index."""
    store = Path(tempfile.mkdtemp(prefix="postgres-", dir=runs))
    with _index(url), _serving(store, "first") as first, _serving(store, "second") as second:
        return _sent([(first, associations[0::2]), (second, associations[1::2])])


@contextlib.contextmanager
def _serving(store: Path, name: str) -> Iterator[int]:
    port = free_port()
    log = store.parent / f"{store.name}-{name}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "dicomfs", "serve", "--create", "--store", str(store),
         "--name", name, "--no-mount", "--bind", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=log.open("w"),
    )  # fmt: skip
    try:
        wait_for_port(port, process)
        yield port
    finally:
        stop(process, 60)
