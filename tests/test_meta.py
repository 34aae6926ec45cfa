"""Headers are decoded with the file's own character set."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dicomfs.dicom import corpus
from dicomfs.dicom.meta import NotIndexable, fold, read_meta

from .conftest import PYDICOM_DATA

CHARSETS = PYDICOM_DATA / "charset_files"


@pytest.mark.parametrize(
    ("file", "name"),
    [
        ("chrArab.dcm", "قباني^لنزار"),
        ("chrFren.dcm", "Buc^Jérôme"),
        ("chrFrenMulti.dcm", "Buc^Jérôme"),
        ("chrGerm.dcm", "Äneas^Rüdiger"),
        ("chrGreek.dcm", "Διονυσιος"),
        ("chrH31.dcm", "Yamada^Tarou=山田^太郎=やまだ^たろう"),
        ("chrH32.dcm", "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"),
        ("chrHbrw.dcm", "שרון^דבורה"),
        ("chrI2.dcm", "Hong^Gildong=洪^吉洞=홍^길동"),
        ("chrJapMulti.dcm", "やまだ^たろう"),
        ("chrKoreanMulti.dcm", "김희중"),
        ("chrRuss.dcm", "Люкceмбypг"),
        ("chrX1.dcm", "Wang^XiaoDong=王^小東"),
        ("chrX2.dcm", "Wang^XiaoDong=王^小东"),
    ],
)
def test_patient_names_decode_with_every_character_set(file: str, name: str) -> None:
    assert read_meta(str(CHARSETS / file)).patient_name == name


def test_utf8_bytes_declared_latin1_are_repaired(tmp_path: Path) -> None:
    corpus.write_awkward(tmp_path)
    assert read_meta(str(tmp_path / "odd/wrong-charset.dcm")).patient_name == "Ångström^Çedille"


def test_a_bare_dataset_without_meta_header_is_read(tmp_path: Path) -> None:
    corpus.write_awkward(tmp_path)
    meta = read_meta(str(tmp_path / "odd/no-meta-header.dcm"))
    assert meta.patient_name == "RAW^DATASET"
    assert meta.transfer_syntax == ""


@pytest.mark.parametrize(
    ("file", "reason"),
    [
        ("junk/empty.dcm", "not a DICOM file"),
        ("junk/README.txt", "not a DICOM file"),
        ("junk/random.bin", "not a DICOM file"),
        ("junk/truncated.dcm", "truncated"),
        ("junk/no-sop-uid.dcm", "no SOPInstanceUID"),
    ],
)
def test_junk_gives_a_reason(tmp_path: Path, file: str, reason: str) -> None:
    corpus.write_awkward(tmp_path)
    with pytest.raises(NotIndexable, match=reason):
        read_meta(str(tmp_path / file))


def test_missing_file_gives_a_reason(tmp_path: Path) -> None:
    with pytest.raises(NotIndexable, match="cannot read"):
        read_meta(str(tmp_path / "nope.dcm"))


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("Müller^Jürgen", "muller jurgen"),
        ("DOE^JOHN", "doe john"),
        ("Buc^Jérôme", "buc jerome"),
        ("やまだ^たろう", "やまだ たろう"),
        ("김희중", "김희중"),
        ("Yamada^Tarou=山田^太郎", "yamada tarou 山田 太郎"),
    ],
)
def test_fold_for_search(text: str, folded: str) -> None:
    assert fold(text) == folded


def _pydicom_meta(path: Path):
    """The slow, general path: pydicom reads the dataset."""
    import warnings

    from dicomfs.dicom import meta

    with warnings.catch_warnings(), open(path, "rb") as source:
        warnings.simplefilter("ignore")
        return meta._from_pydicom(meta._read_dataset(source))


def test_lean_header_reader_agrees_with_pydicom_on_every_real_file() -> None:
    from dicomfs.dicom.header import read_header
    from dicomfs.dicom.meta import _WANTED

    compared = 0
    for path in sorted(PYDICOM_DATA.glob("*_files/*")):
        if not path.is_file() or read_header(path.read_bytes(), _WANTED) is None:
            continue
        try:
            slow = _pydicom_meta(path)
        except NotIndexable as exc:
            with pytest.raises(NotIndexable, match=re.escape(str(exc))):
                read_meta(str(path))
            continue
        assert read_meta(str(path)) == slow, path.name
        compared += 1
    assert compared > 60


def test_a_header_at_hand_is_read_from_memory_and_agrees_with_the_file(tmp_path: Path) -> None:
    from dicomfs.dicom.meta import FIRST_READ

    compared = 0
    for path in sorted(PYDICOM_DATA.glob("*_files/*")):
        try:
            from_file = read_meta(str(path))
        except NotIndexable:
            continue
        head = path.read_bytes()[:FIRST_READ]
        assert read_meta(str(path), head=head) == from_file, path.name
        compared += 1
    assert compared > 60
    # The file is not read at all when its head holds the header...
    path = tmp_path / "mr.dcm"
    corpus.write(path, corpus.Spec(patient_name="Head^Only"))
    head = path.read_bytes()[:FIRST_READ]
    path.unlink()
    assert read_meta(str(path), head=head).patient_name == "Head^Only"
    # ...and is, when the header goes on past it.
    with pytest.raises(NotIndexable):
        read_meta(str(path), head=head[:300])
