"""Names from free-form values, for every level of every view: safe in a shell, within the
length a name may have even with a suffix, the same for the same value, and unique where
a directory needs them so."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicomfs.dicom import names

SAFE = re.compile(r"^[\w.+@-]+$")
CHARACTERS = st.characters(codec="utf-8")
TEXT = (
    st.text(CHARACTERS)
    | st.text(CHARACTERS | st.sampled_from("a _.-é"), min_size=90, max_size=300)  # cut to fit
    | st.sampled_from(["DOE^JOHN", "../../etc", "-rf", ".hidden", "~1a2b3c4d", "a~b", "\u202e"])
)
NUMBERS = st.none() | st.integers(-(2**31), 2**31)
DATES = st.sampled_from(["", "20040609", "19000101", "99991231"])

# Each view's level names, as made from the values the index holds.
BASES = {
    "patient": lambda a, b, n: names.patient_dir(a, b),
    "study": lambda a, b, n: names.study_dir(b if b.isdigit() and len(b) == 8 else "", a),
    "series": lambda a, b, n: names.series_dir(n, a),
    "modality": lambda a, b, n: names.modality_dir(a),
    "station": lambda a, b, n: names.station_dir(a),
    "uid": lambda a, b, n: names.uid_dir(a),
    "instance": lambda a, b, n: names.instance_file(n),
}


def assert_safe(name: str) -> None:
    assert SAFE.match(name), name
    assert name not in {".", ".."}
    assert not name.startswith(("-", "."))
    assert "~" not in name  # so that a suffixed name is never another entry's base
    assert unicodedata.is_normalized("NFC", name)


@pytest.mark.parametrize("level", sorted(BASES))
@settings(deadline=None)  # a busy machine is slow, not wrong
@given(first=TEXT, second=TEXT, number=NUMBERS)
def test_every_level_of_every_view_gives_a_safe_name_with_room_for_a_suffix(
    level: str, first: str, second: str, number: int | None
) -> None:
    base = BASES[level](first, second, number)
    assert_safe(base)
    longest = names.with_suffix(base, first, long=True)
    assert len(longest.encode("utf-8")) <= names.NAME_MAX
    assert names.split_suffix(longest) == (base, names.long_hash(first))


@given(TEXT)
def test_a_value_gives_the_same_name_however_it_is_normalised(value: str) -> None:
    """NFD (as macOS writes) and NFC (as most others do) of one name are one directory."""
    for form in ("NFD", "NFKC", "NFC"):
        same = unicodedata.normalize(form, value)
        if unicodedata.normalize("NFC", same) == unicodedata.normalize("NFC", value):
            assert names.safe_component(same) == names.safe_component(value)
    assert names.patient_dir(unicodedata.normalize("NFD", value), "1") == names.patient_dir(
        value, "1"
    )


@given(TEXT)
def test_a_safe_name_is_its_own_safe_name(value: str) -> None:
    """Making a name safe twice changes nothing: a name read back is the name shown."""
    once = names.safe_component(value)
    assert names.safe_component(once) == once


@settings(deadline=None)
@given(st.lists(TEXT, unique=True, max_size=30))
def test_the_uids_of_one_directory_get_unique_names_in_any_order(uids: list[str]) -> None:
    found = names.uid_names(uids, ".dcm")
    assert len(set(found)) == len(found)
    for uid, name in zip(uids, found, strict=True):
        assert names.split_suffix(name)[0] == f"{names.safe_component(uid)}.dcm"
        assert (name == f"{uid}.dcm") == names.is_plain_uid(uid)  # plain UIDs are themselves
    assert dict(zip(uids, found, strict=True)) == dict(
        zip(uids[::-1], names.uid_names(uids[::-1], ".dcm"), strict=True)
    )


@given(st.lists(st.integers(0, 999_999), min_size=2, max_size=50))
def test_instances_and_series_sort_by_their_number(numbers: list[int]) -> None:
    for name_of in (names.instance_file, names.series_number_dir):
        by_name = sorted(numbers, key=name_of)
        assert by_name == sorted(numbers)


@given(st.integers(max_value=-1) | st.none())
def test_a_missing_or_negative_number_is_zero(number: int | None) -> None:
    assert names.instance_file(number) == "000000.dcm"
    assert names.series_dir(number, "") == "000000"


UIDS = st.text(st.sampled_from("0123456789."), max_size=260) | st.text(CHARACTERS, max_size=80)


@given(UIDS)
@settings(max_examples=400)
def test_a_plain_uid_is_one_its_safe_form_leaves_as_it_is(uid: str) -> None:
    assert names.is_plain_uid(uid) == (names.safe_component(uid) == uid)
