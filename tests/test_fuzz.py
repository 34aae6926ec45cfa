"""Mutated real files through `dicomfs index` and through the receiver: a bounded fuzz.

pydicom's own test files are damaged the ways disks, networks and attackers damage
them (bytes flipped, truncated, lengths made huge, junk inserted, structure
repeated). Every mutant must end as an indexed instance or a skip with a reason
(index), or as Success or "cannot understand" (receiver): no crash, no input
changed, nothing left behind, and the service goes on storing good instances.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE
from pynetdicom.dsutils import split_dataset

from dicomfs.dicom import corpus
from dicomfs.store import directories

from .conftest import PYDICOM_DATA, tree_fingerprint
from .peers import send_raw_store, serving

SEED = 20261125
MUTANTS_PER_FILE = 4
MAX_SOURCE_SIZE = 300_000


@dataclasses.dataclass(frozen=True)
class Source:
    path: Path
    sop_class: str
    syntax: str
    meta: bytes  # preamble, DICM and the file meta group, as in the file
    dataset: bytes


def sources() -> list[Source]:
    """pydicom's small Part 10 test files with a SOP class, in name order."""
    found = []
    for path in sorted((PYDICOM_DATA / "test_files").glob("*.dcm")):
        if path.stat().st_size > MAX_SOURCE_SIZE:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                meta, offset = split_dataset(path)
                ds = pydicom.dcmread(path, stop_before_pixels=True)
                sop_class = str(ds.SOPClassUID)
            except Exception:
                continue
        data = path.read_bytes()
        found.append(Source(path, sop_class, str(meta.TransferSyntaxUID), data[:offset],
                            data[offset:]))  # fmt: skip
    return found


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One damage of the kinds real files suffer."""
    if not data:
        return bytes(rng.randrange(256) for _ in range(64))
    buf = bytearray(data)
    at = rng.randrange(len(buf))
    kind = rng.randrange(6)
    if kind == 0:  # bits flipped here and there
        for _ in range(rng.randint(1, 16)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif kind == 1:  # cut short
        del buf[at:]
    elif kind == 2:  # a length (or anything) made huge
        buf[at : at + 4] = rng.choice(
            [b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x01\x00"]
        )
    elif kind == 3:  # junk inserted
        buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 512)))
    elif kind == 4:  # a stretch repeated
        stretch = buf[at : at + rng.randint(8, 2048)]
        buf[at:at] = stretch * rng.randint(2, 50)
    else:  # the start overwritten
        buf[: rng.randint(8, 256)] = bytes(rng.randrange(256) for _ in range(rng.randint(8, 256)))
    return bytes(buf)


def mutants(found: list[Source]) -> Iterator[tuple[Source, bytes]]:
    rng = random.Random(SEED)
    for source in found:
        for _ in range(MUTANTS_PER_FILE):
            yield source, mutate(source.dataset, rng)


@pytest.fixture(scope="module")
def found() -> list[Source]:
    return sources()


def test_the_fuzz_has_hundreds_of_mutants_of_real_files(found: list[Source]) -> None:
    assert len(found) * MUTANTS_PER_FILE >= 200


def test_index_takes_every_mutant_or_says_why_and_changes_none(
    tmp_path: Path, found: list[Source]
) -> None:
    rng = random.Random(SEED + 1)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for number, (source, dataset) in enumerate(mutants(found)):
        whole = source.meta + dataset
        if number % 5 == 0:  # now and then the file meta too
            whole = mutate(whole, rng)
        (damaged / f"{number:04d}_{source.path.name}").write_bytes(whole)
    before = tree_fingerprint(damaged)
    store = tmp_path / "store"
    store.mkdir()
    for args in (["--store", str(store), str(damaged)],  # an import
                 ["--store", str(damaged)]):  # fmt: skip  # the damaged tree as a store
        result = subprocess.run(
            [sys.executable, "-m", "dicomfs", "index", "--json", *args],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        report = json.loads(result.stdout)
        assert report["indexed"] + report["skipped"] == len(before)
        assert all(skip["reason"] for skip in report["skipped_files"])
    assert tree_fingerprint(damaged) == before  # nothing read was changed
    check = subprocess.run([sys.executable, "-m", "dicomfs", "check", "--store", str(store)],
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_receiver_answers_every_mutant_and_goes_on_storing(
    tmp_path: Path, found: list[Source]
) -> None:
    ae = AE(ae_title="FUZZER")
    pairs = sorted({(s.sop_class, s.syntax) for s in found})[:127]
    for sop_class, syntax in pairs:
        ae.add_requested_context(sop_class, [syntax])
    ae.add_requested_context(MRImageStorage, [ExplicitVRLittleEndian])
    with serving(tmp_path / "store") as server:
        fds = f"/proc/{server.process.pid}/fd"
        assoc = ae.associate("127.0.0.1", server.port, ae_title="DICOMFS")
        assert assoc.is_established
        contexts = {(cx.abstract_syntax, cx.transfer_syntax[0]): cx.context_id
                    for cx in assoc.accepted_contexts}  # fmt: skip
        # One good instance first: what serve keeps open from then on (the index's WAL
        # for its flushes, the spool file made ahead) is part of the baseline.
        assert assoc.send_c_store(corpus.dataset(corpus.Spec())).Status == 0x0000
        baseline = len(os.listdir(fds))
        answered, good_sent = [], 1
        for number, (source, dataset) in enumerate(mutants(found)):
            context = contexts.get((source.sop_class, source.syntax))
            if context is None:
                continue  # not a storage SOP class: the receiver rightly refused its context
            sop_uid = f"1.2.826.0.1.3680043.8.498.999.{number}"
            status = send_raw_store(assoc, sop_uid, dataset, context, source.sop_class)
            assert status in (0x0000, 0xC210), f"mutant {number} of {source.path.name}"
            answered.append(status)
            assert not server.spooled(), f"mutant {number} left its spool file"
            # Bounded: the association holds a few series' directories open besides.
            held = directories.HELD
            assert len(os.listdir(fds)) <= baseline + 1 + held, f"mutant {number} left one"
            if number % 10 == 0:  # the service still stores good instances
                good = corpus.dataset(corpus.Spec())
                assert assoc.send_c_store(good).Status == 0x0000
                good_sent += 1
        assoc.release()
        assert server.process.poll() is None
    assert len(answered) >= 150
    assert answered.count(0xC210) > 0  # the fuzz did damage something
    check = subprocess.run(
        [sys.executable, "-m", "dicomfs", "check", "--store", str(server.store)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert good_sent > 10
