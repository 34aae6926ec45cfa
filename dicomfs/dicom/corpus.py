"""Generated DICOM corpora for tests, benchmarks and trying dicomfs out.

Small, valid MR/CT instances (a 4x4 image unless asked for more), laid out the way a storescp or an
old incoming tree would leave them, plus awkward ones: names with slashes,
`..`, empty, 200 characters, non-Latin scripts, `<script>`, a wrong character
set, no StationName, and duplicated SOPInstanceUIDs.
"""

from __future__ import annotations

import dataclasses
import os
import random
import warnings
from collections.abc import Iterator
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root for generated UIDs


@dataclasses.dataclass(frozen=True)
class Spec:
    """One instance to write. Text values are str and encoded with `charset`."""

    patient_name: str = "DOE^JOHN"
    patient_id: str = "12345"
    study_uid: str = ""
    series_uid: str = ""
    sop_uid: str = ""
    modality: str = "MR"
    station_name: str | None = "BWOW1"
    study_date: str = "20040609"
    study_description: str = "Brain"
    series_number: int = 1
    series_description: str = "T1 axial"
    instance_number: int = 1
    accession: str = "A100"
    charset: str | None = "ISO_IR 192"
    matrix: int = 4  # rows and columns of the 16-bit image: 256 is a typical MR slice


def dataset(spec: Spec) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # awkward values exceed DICOM's lengths on purpose
        return _dataset(spec)


def _dataset(spec: Spec) -> Dataset:
    ds = Dataset()
    if spec.charset:
        ds.SpecificCharacterSet = spec.charset
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = spec.sop_uid or generate_uid(UID_ROOT)
    ds.StudyDate = spec.study_date
    ds.StudyTime = "101500"
    ds.AccessionNumber = spec.accession
    ds.Modality = spec.modality
    if spec.station_name is not None:
        ds.StationName = spec.station_name
    ds.StudyDescription = spec.study_description
    ds.SeriesDescription = spec.series_description
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = "19700101"
    ds.StudyInstanceUID = spec.study_uid or generate_uid(UID_ROOT)
    ds.SeriesInstanceUID = spec.series_uid or generate_uid(UID_ROOT)
    ds.SeriesNumber = spec.series_number
    ds.InstanceNumber = spec.instance_number
    ds.Rows = ds.Columns = spec.matrix
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    size = 2 * spec.matrix * spec.matrix
    ds.PixelData = (bytes(range(256)) * (size // 256 + 1))[:size]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def write(path: Path, spec: Spec, *, with_meta: bool = True) -> Dataset:
    """Write one instance; without the preamble and meta header when with_meta is False."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # awkward values exceed DICOM's lengths on purpose
        ds = _dataset(spec)
        if with_meta:
            ds.save_as(path, enforce_file_format=True)
        else:
            del ds.file_meta
            ds.save_as(path, implicit_vr=True, little_endian=True)
    return ds


def regular_specs(
    patients: int, studies: int, series: int, instances: int, seed: int = 1, matrix: int = 4
) -> Iterator[Spec]:
    """A tidy corpus: patients x studies x series x instances."""
    rng = random.Random(seed)
    stations = ["BWOW1", "BWCTPIKE", "LMRC3T", "BAY3T"]
    for p in range(patients):
        for s in range(studies):
            study_uid = f"{UID_ROOT}{seed}.{p}.{s}"
            modality = "CT" if (p + s) % 3 == 0 else "MR"
            date = f"20{4 + s % 20:02d}{1 + p % 12:02d}{1 + (p + s) % 28:02d}"
            station = rng.choice(stations)
            for r in range(series):
                series_uid = f"{study_uid}.{r + 1}"
                for i in range(instances):
                    yield Spec(
                        patient_name=f"PATIENT{p:05d}^TEST", patient_id=f"ID{p:05d}",
                        study_uid=study_uid, series_uid=series_uid,
                        sop_uid=f"{series_uid}.{i + 1}", modality=modality,
                        station_name=station, study_date=date,
                        study_description=f"Study {s}", series_number=r + 1,
                        series_description=f"Series {r + 1}", instance_number=i + 1,
                        accession=f"ACC{p:05d}{s:02d}", charset="ISO_IR 100", matrix=matrix,
                    )  # fmt: skip


def write_regular(
    root: Path,
    patients: int,
    studies: int,
    series: int,
    instances: int,
    seed: int = 1,
    matrix: int = 4,
) -> int:
    """Write a tidy corpus in storescp's flat-ish layout; returns the number of files."""
    count = 0
    for spec in regular_specs(patients, studies, series, instances, seed, matrix):
        folder = root / spec.study_uid
        write(folder / f"MR.{spec.sop_uid}.dcm", spec)
        count += 1
    return count


# The awkward part: each entry is (file name, spec or None for junk, what to expect).
AWKWARD_NAMES = {
    "slash": "A/B^C/D",
    "dotdot": "../../x",
    "empty": "",
    "long": "L" * 200 + "^" + "M" * 60,
    "greek": "Διονυσιος",
    "japanese": "山田^太郎=やまだ^たろう",
    "script": "<script>alert(1)</script>",
    "accents": "Müller^Jürgen",
    "dash": "-rf^--help",
    "dots": ".^..",
}


def write_awkward(root: Path) -> dict[str, list[str]]:
    """Write awkward but indexable files and junk; return what each kind is expected to be.

    The result maps "indexed" to the SOPInstanceUIDs that must end up in the index,
    "skipped" to the relative paths that must be skipped, and "duplicate" to
    the older file of a duplicated SOPInstanceUID.
    """
    expect: dict[str, list[str]] = {"indexed": [], "skipped": [], "duplicate": []}
    study = f"{UID_ROOT}9.1"
    for n, (label, name) in enumerate(AWKWARD_NAMES.items()):
        spec = Spec(
            patient_name=name,
            patient_id=f"AWK-{label}",
            study_uid=f"{study}.{n}",
            series_uid=f"{study}.{n}.1",
            sop_uid=f"{study}.{n}.1.1",
            study_description=name,
            series_description=name,
        )
        write(root / "awkward" / f"{label}.dcm", spec)
        expect["indexed"].append(spec.sop_uid)

    odd = [
        # ID with a slash and a 200-character station; no StationName; duplicated series numbers
        Spec(patient_name="ODD^ONE", patient_id="A/B", station_name="S" * 200,
             sop_uid=f"{study}.20.1"),
        Spec(patient_name="NOSTATION^X", patient_id="NS1", station_name=None,
             sop_uid=f"{study}.21.1"),
        Spec(patient_name="TWIN^SERIES", patient_id="TW1", study_uid=f"{study}.22",
             series_uid=f"{study}.22.1", sop_uid=f"{study}.22.1.1", series_number=5),
        Spec(patient_name="TWIN^SERIES", patient_id="TW1", study_uid=f"{study}.22",
             series_uid=f"{study}.22.2", sop_uid=f"{study}.22.2.1", series_number=5),
        # Non-ASCII bytes with no SpecificCharacterSet at all
        Spec(patient_name="Gärtner^Ö", patient_id="NOCS", charset=None,
             sop_uid=f"{study}.23.1"),
    ]  # fmt: skip
    for n, spec in enumerate(odd):
        write(root / "odd" / f"odd{n}.dcm", spec)
        expect["indexed"].append(spec.sop_uid)

    # A file written with a wrong character set: UTF-8 bytes declared as Latin-1.
    wrong = dataset(
        Spec(patient_name="x", patient_id="WRONGCS", charset="ISO_IR 100", sop_uid=f"{study}.24.1")
    )
    wrong["PatientName"].value = "Ångström^Çedille".encode()
    wrong_path = root / "odd" / "wrong-charset.dcm"
    wrong.save_as(wrong_path, enforce_file_format=True)
    expect["indexed"].append(f"{study}.24.1")

    # A bare dataset: no preamble, no meta header, as old tools wrote them.
    write(
        root / "odd" / "no-meta-header.dcm",
        Spec(patient_name="RAW^DATASET", patient_id="RAW1", sop_uid=f"{study}.25.1"),
        with_meta=False,
    )
    expect["indexed"].append(f"{study}.25.1")

    # The same SOPInstanceUID twice: the newer file wins, the older is reported.
    dup = Spec(patient_name="DUP^PATIENT", patient_id="DUP1", sop_uid=f"{study}.26.1")
    write(root / "dup" / "older.dcm", dup)
    write(root / "dup" / "newer.dcm", dup)
    os.utime(root / "dup" / "older.dcm", (1_000_000_000, 1_000_000_000))
    expect["indexed"].append(dup.sop_uid)
    expect["duplicate"].append("dup/older.dcm")

    junk = root / "junk"
    junk.mkdir(parents=True, exist_ok=True)
    (junk / "empty.dcm").write_bytes(b"")
    (junk / "README.txt").write_text("not an image\n")
    (junk / "DICOM_files_as_of_12_30_04.html").write_text("<html></html>\n")
    whole = (root / "awkward" / "greek.dcm").read_bytes()
    (junk / "truncated.dcm").write_bytes(whole[: len(whole) // 3])
    (junk / "random.bin").write_bytes(random.Random(7).randbytes(4096))
    nosop = dataset(Spec(patient_id="NOSOP"))
    del nosop.SOPInstanceUID
    del nosop.file_meta.MediaStorageSOPInstanceUID
    nosop.save_as(junk / "no-sop-uid.dcm", enforce_file_format=False)
    expect["skipped"] += [
        "junk/empty.dcm", "junk/README.txt", "junk/DICOM_files_as_of_12_30_04.html",
        "junk/truncated.dcm", "junk/random.bin", "junk/no-sop-uid.dcm",
    ]  # fmt: skip
    return expect
