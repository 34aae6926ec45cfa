"""Path components are safe for any value a DICOM file may carry."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dicomfs import names

SAFE = re.compile(r"^[\w.+@-]+$")


@given(st.text())
def test_any_value_gives_a_safe_shell_friendly_name(value: str) -> None:
    name = names.safe_component(value)
    assert name
    assert name not in {".", ".."}
    assert "/" not in name
    assert "\x00" not in name
    assert not name.startswith(("-", "."))
    assert len(name.encode("utf-8")) <= names.BASE_MAX
    assert SAFE.match(name), name
    assert all(ch.isprintable() for ch in name)


@given(st.text(), st.text())
def test_patient_dir_stays_within_name_max_even_with_suffix(name: str, pid: str) -> None:
    base = names.patient_dir(name, pid)
    full = names.with_suffix(base, "key")
    assert len(full.encode("utf-8")) <= names.NAME_MAX
    assert names.split_suffix(full) == (base, names.short_hash("key"))
    assert names.split_suffix(base) == (base, None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("DOE^JOHN", "DOE_JOHN"),
        ("../../x", "x"),
        ("A/B", "A_B"),
        ("", "UNKNOWN"),
        ("-rf", "rf"),
        ("山田^太郎", "山田_太郎"),
        ("Müller Jürgen", "Müller_Jürgen"),
        ("<script>alert(1)</script>", "script_alert_1_script"),
    ],
)
def test_known_values(value: str, expected: str) -> None:
    assert names.safe_component(value) == expected


def test_truncation_never_splits_a_character() -> None:
    name = names.safe_component("é" * 300)
    assert len(name.encode("utf-8")) <= names.BASE_MAX
    assert set(name) == {"é"}


@pytest.mark.parametrize(
    ("func", "args", "expected"),
    [
        (names.modality_dir, ("MR",), "MR0000.MOD"),
        (names.modality_dir, ("",), "UNKNOWN.MOD"),
        (names.station_dir, ("BWOW1",), "BWOW1.STA"),
        (names.station_dir, ("",), "UNKNOWN.STA"),
        (names.day_dir, ("20040609",), "20040609.DAY"),
        (names.day_dir, ("",), "00000000.DAY"),
        (names.series_number_dir, (1,), "000001.SER"),
        (names.series_number_dir, (None,), "000000.SER"),
        (names.uid_dir, ("1.2.840.1",), "1.2.840.1.UID"),
        (names.patient_dir, ("DOE^JOHN", "12345"), "DOE_JOHN_12345"),
        (names.study_dir, ("20040609", "Brain MRI"), "20040609_Brain_MRI"),
        (names.series_dir, (2, "T1 axial"), "000002_T1_axial"),
        (names.instance_file, (7,), "000007.dcm"),
    ],
)
def test_the_labs_familiar_names(func, args, expected) -> None:
    assert func(*args) == expected


def test_suffix_goes_before_the_extension_so_twins_sort_together() -> None:
    twin = names.with_suffix("000005.SER", "1.2.3")
    assert re.match(r"^000005~[0-9a-f]{8}\.SER$", twin)
    assert names.split_suffix(twin) == ("000005.SER", names.short_hash("1.2.3"))
