"""Path components are safe for any value a DICOM file may carry."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicomfs.dicom import names

from .conftest import LOOKALIKES, lookalike_uids_with_one_short_hash

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
    for long, digest in ((False, names.short_hash("key")), (True, names.long_hash("key"))):
        full = names.with_suffix(base, "key", long=long)
        assert len(full.encode("utf-8")) <= names.NAME_MAX
        assert names.split_suffix(full) == (base, digest)
    assert names.split_suffix(base) == (base, None)


@settings(deadline=None)  # a busy machine is slow, not wrong
@given(st.text(), st.sampled_from(["", ".dcm"]))
def test_a_by_uid_name_stays_within_name_max_and_splits_back_to_its_safe_form(
    uid: str, ext: str
) -> None:
    (name,) = names.uid_names([uid], ext)
    assert len(name.encode("utf-8")) <= names.NAME_MAX
    base, digest = names.split_suffix(name)
    assert SAFE.match(base), name
    if names.is_plain_uid(uid):
        assert (name, digest) == (f"{uid}{ext}", None)
    else:
        assert (base, digest) == (f"{names.safe_component(uid)}{ext}", names.short_hash(uid))


# Bases as the views make them: shared often, with and without an extension; keys
# that are mostly distinct by their short suffix, and two that are not.
BASES = st.sampled_from(["000001.dcm", "000001.SER", "000001", "DOE_JOHN_12345", "1.2.3_4"])
KEYS = st.text() | st.sampled_from(lookalike_uids_with_one_short_hash())


@settings(deadline=None)  # a busy machine is slow, not wrong
@given(st.lists(st.tuples(BASES, KEYS), unique_by=lambda entry: entry[1]), st.booleans())
def test_unique_names_are_unique_and_split_back_to_their_base(
    entries: list[tuple[str, str]], always: bool
) -> None:
    found = names.unique_names(entries, always=always)
    assert len(set(found)) == len(found)
    for (base, key), name in zip(entries, found, strict=True):
        group = [other for other_base, other in entries if other_base == base]
        twins = [other for other in group if names.short_hash(other) == names.short_hash(key)]
        if len(group) == 1 and not always:
            expected = None
        else:
            expected = names.long_hash(key) if len(twins) > 1 else names.short_hash(key)
        assert names.split_suffix(name) == (base, expected)
    # A name depends on what the directory holds, not on the order it is listed in.
    assert dict(zip(entries, found, strict=True)) == dict(
        zip(entries[::-1], names.unique_names(entries[::-1], always=always), strict=True)
    )


def test_keys_whose_short_suffixes_collide_get_the_long_one_and_the_others_keep_theirs() -> None:
    first, second = lookalike_uids_with_one_short_hash()
    assert names.short_hash(first) == names.short_hash(second)
    entries = [("000001.dcm", first), ("000001.dcm", "1.2.3"), ("000001.dcm", second)]
    found = names.unique_names(entries)
    assert found == [
        f"000001~{names.long_hash(first)}.dcm",
        f"000001~{names.short_hash('1.2.3')}.dcm",
        f"000001~{names.long_hash(second)}.dcm",
    ]
    assert [names.split_suffix(name)[0] for name in found] == ["000001.dcm"] * 3


def test_odd_uids_of_one_safe_form_get_unique_names_however_their_suffixes_collide() -> None:
    first, second = lookalike_uids_with_one_short_hash()
    plain = names.safe_component(first)
    found = names.uid_names([first, plain, second, "1.2.3/9"], ".dcm")
    assert found == [
        f"{plain}~{names.long_hash(first)}.dcm",
        f"{plain}.dcm",
        f"{plain}~{names.long_hash(second)}.dcm",
        f"1.2.3_9~{names.short_hash('1.2.3/9')}.dcm",
    ]


def test_lookalike_uids_are_told_apart_and_a_plain_uid_keeps_its_name() -> None:
    slash, underscore, backslash = LOOKALIKES
    assert names.uid_names([slash, underscore, backslash, "1.2.840.1"]) == [
        f"1.2.3_4~{names.short_hash(slash)}",
        "1.2.3_4",
        f"1.2.3_4~{names.short_hash(backslash)}",
        "1.2.840.1",
    ]


@pytest.mark.parametrize(
    "name", ["1.2.3_4~1a2b3c4", "1.2.3_4~1A2B3C4D", "1.2.3_4~" + "0" * 16, "~1a2b3c4d"]
)
def test_a_tilde_without_a_suffix_of_the_known_lengths_is_part_of_the_name(name: str) -> None:
    assert names.split_suffix(name) == (name, None)


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
