"""Benchmark corpora written fast: one template instance, its values patched per file.

pydicom builds and encodes a dataset in about a millisecond; a million instances would
take longer to write than to benchmark. Every value that differs between instances here
(names, IDs, UIDs, dates, numbers) is written into the template once as a marker of fixed
width, so each file is the template's bytes with those spans overwritten.
"""

from __future__ import annotations

import concurrent.futures
import io
import multiprocessing
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import pydicom

from dicomfs.dicom import corpus

ROOT = corpus.UID_ROOT  # 26 characters: the UIDs below stay under 64


# Each marker is unique in the template, and the value that replaces it has its width.
def _markers(p: int, study: int, series: int, instance: int, station: int) -> dict[str, str]:
    study_uid = f"{ROOT}7{p:06d}{study:02d}"
    series_uid = f"{study_uid}.1{series:02d}"
    return {
        "PATIENT77777^TEST": f"PATIENT{p:05d}^TEST",
        "ID77777": f"ID{p:05d}",
        "ACC7777777": f"ACC{p:05d}{study:02d}",
        f"{ROOT}777777777.777.7777": f"{series_uid}.1{instance:03d}",  # before its prefixes
        f"{ROOT}777777777.777": series_uid,
        f"{ROOT}777777777": study_uid,
        "20047777": f"2004{1 + p % 12:02d}{1 + p % 28:02d}",
        "STATION7": f"STATION{station}",
        "7777": f"{instance:<4d}",  # InstanceNumber (IS: trailing spaces allowed)
    }


def _template_spec(matrix: int, modality: str) -> corpus.Spec:
    return corpus.Spec(
        modality=modality,
        patient_name="PATIENT77777^TEST", patient_id="ID77777", accession="ACC7777777",
        study_uid=f"{ROOT}777777777", series_uid=f"{ROOT}777777777.777",
        sop_uid=f"{ROOT}777777777.777.7777", study_date="20047777", station_name="STATION7",
        series_number=1, instance_number=7777, study_description="Study",
        series_description="Series", charset="ISO_IR 100", matrix=matrix,
    )  # fmt: skip


class Template:
    """One encoded instance and where its markers lie."""

    def __init__(self, matrix: int, modality: str = "MR") -> None:
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            corpus.dataset(_template_spec(matrix, modality)).save_as(
                buffer, enforce_file_format=True
            )
        self.data = buffer.getvalue()
        header = self.data[: self.data.rfind(b"\xe0\x7f\x10\x00")]  # before PixelData
        self.spans: list[tuple[int, str]] = []
        taken: set[int] = set()
        for marker in _markers(0, 0, 0, 0, 0):
            start = 0
            while (found := header.find(marker.encode(), start)) >= 0:
                start = found + len(marker)
                if not taken & set(range(found, start)):
                    self.spans.append((found, marker))
                    taken.update(range(found, start))
        assert {marker for _, marker in self.spans} == set(_markers(0, 0, 0, 0, 0))

    def instance(self, values: dict[str, str]) -> bytes:
        out = bytearray(self.data)
        for offset, marker in self.spans:
            value = values[marker].encode()
            assert len(value) == len(marker), (marker, value)
            out[offset : offset + len(value)] = value
        return bytes(out)


def _write_patients(job: tuple[Path, range, int, int, int, str]) -> int:
    root, patients, series, instances, matrix, modality = job
    template = Template(matrix, modality)
    written = 0
    for p in patients:
        folder = root / f"p{p:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        for s in range(1, series + 1):
            for i in range(1, instances + 1):
                values = _markers(p, 0, s, i, p % 4)
                path = folder / f"{values[f'{ROOT}777777777.777.7777']}.dcm"
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    os.write(fd, template.instance(values))
                finally:
                    os.close(fd)
                written += 1
    return written


def write_patients(
    root: Path,
    patients: range,
    series: int = 3,
    instances: int = 100,
    matrix: int = 4,
    progress: Callable[[int], None] | None = None,
    modality: str = "MR",
) -> int:
    """Each patient (numbered, at most 99,999) gets one study of series x instances, in a
    directory of its own; on every core."""
    chunk = 20
    jobs = [
        (root, patients[start : start + chunk], series, instances, matrix, modality)
        for start in range(0, len(patients), chunk)
    ]
    total = 0
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(mp_context=context) as pool:
        for written in pool.map(_write_patients, jobs):
            total += written
            if progress:
                progress(total)
    return total


def check(path: Path) -> pydicom.Dataset:
    """What pydicom reads back from one generated file (for the benchmark's own check)."""
    return pydicom.dcmread(path, stop_before_pixels=True)
