"""Attribute values -> safe, shell-friendly path components.

Every name made here is UTF-8, at most NAME_MAX bytes, never empty, never `.` or
`..`, never starts with `-` or `.`, and holds only letters, digits (of any
script) and `._-+@`: nothing a shell needs quoted, no `/`, NUL or control
characters. Pure functions: the same values always give the same name.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

NAME_MAX = 255
# Room left for a disambiguating suffix ("~" + up to 40 hex digits) and an extension.
BASE_MAX = 200
# A suffix's hex digits: 8 of the key's SHA-1, as names have always had; 40 of its
# SHA-256 where two keys of one directory share those 8 (anyone can find such a pair
# in a second; no one can find a pair sharing the long form).
SHORT_DIGITS = 8
LONG_DIGITS = 40

_SAFE_PUNCT = frozenset("._-+@")
_RUNS = re.compile(r"_{2,}")
_DIGITS_AND_DOTS = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_DIGEST = re.compile(rf"[0-9a-f]{{{SHORT_DIGITS}}}|[0-9a-f]{{{LONG_DIGITS}}}")


def safe_component(text: str, placeholder: str = "UNKNOWN", max_bytes: int = BASE_MAX) -> str:
    """Make one path component from a free-form value ('DOE^JOHN' -> 'DOE_JOHN')."""
    chars = [
        ch if (ch.isalnum() or ch in _SAFE_PUNCT) else "_"
        for ch in unicodedata.normalize("NFC", text)
    ]
    name = _RUNS.sub("_", "".join(chars)).strip("_.-+@")
    name = truncate_utf8(name, max_bytes).rstrip("_.-+@")
    return name or placeholder


def truncate_utf8(text: str, max_bytes: int) -> str:
    """Cut text to at most max_bytes of UTF-8 without splitting a character."""
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


def short_hash(key: str) -> str:
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:SHORT_DIGITS]


def long_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:LONG_DIGITS]


def with_suffix(base: str, key: str, *, long: bool = False) -> str:
    """The name used when `base` is shared by several entries of one directory.

    The suffix goes before a known extension so that `000001.SER` becomes
    `000001~1a2b3c4d.SER` and still sorts beside its twin.
    """
    digest = long_hash(key) if long else short_hash(key)
    stem, dot, ext = base.rpartition(".")
    if dot and ext in _EXTENSIONS:
        return f"{stem}~{digest}.{ext}"
    return f"{base}~{digest}"


def split_suffix(name: str) -> tuple[str, str | None]:
    """Inverse of with_suffix: ('000001~1a2b3c4d.SER') -> ('000001.SER', '1a2b3c4d')."""
    stem, dot, ext = name.rpartition(".")
    if not (dot and ext in _EXTENSIONS):
        stem, ext = name, ""
    base, tilde, digest = stem.rpartition("~")
    if not tilde or not _DIGEST.fullmatch(digest) or not base:
        return name, None
    return (f"{base}.{ext}" if ext else base), digest


def unique_names(entries: Sequence[tuple[str, str]], *, always: bool = False) -> list[str]:
    """The names of one directory's entries, given as (base, key) pairs, in their order.

    A base that one entry alone has is its name, unless `always`; a shared one gets
    a suffix from each entry's own key (a UID: distinct within the directory), and
    the long suffix where two keys share the short one. Bases never hold "~", so a
    suffixed name is never another entry's base. A name depends on every entry that
    shares its base, so `entries` holds all of the directory's entries of each base.
    """
    bases = [base for base, _ in entries]
    if not always and len(set(bases)) == len(bases):
        return bases  # the common case, and a listing of thousands asks it first
    sharing_base = Counter(bases)
    # Hash only the keys that need a suffix: a listing's names are mostly unique.
    shorts = [short_hash(key) if always or sharing_base[base] > 1 else "" for base, key in entries]
    sharing_short = Counter((base, short) for (base, _), short in zip(entries, shorts, strict=True))
    return [
        base
        if sharing_base[base] == 1 and not always
        else with_suffix(base, key, long=sharing_short[base, short] > 1)
        for (base, key), short in zip(entries, shorts, strict=True)
    ]


def uid_names(uids: Sequence[str], ext: str = "") -> list[str]:
    """by-uid's names for the UIDs of one directory (with `ext` appended), in order.

    A plain UID, one that safe_component leaves as it is, is its own name. Any other
    shows as its safe form with a suffix from its own hash, always: so it is never
    taken for a plain UID (which holds no "~"), nor for another UID of its safe form.
    """
    odd = [(f"{safe_component(uid)}{ext}", uid) for uid in uids if not is_plain_uid(uid)]
    suffixed = dict(zip([uid for _, uid in odd], unique_names(odd, always=True), strict=True))
    return [suffixed.get(uid, f"{uid}{ext}") for uid in uids]


def is_plain_uid(uid: str) -> bool:
    """Whether safe_component leaves the UID as it is: at once for digits and dots,
    what nearly every UID is (by-uid asks it of every study of the store)."""
    if len(uid) <= BASE_MAX and _DIGITS_AND_DOTS.fullmatch(uid):
        return True
    return safe_component(uid) == uid


_EXTENSIONS = frozenset({"MOD", "STA", "DAY", "UID", "SER", "dcm"})


# --- the bases of each view's names -------------------------------------------------------


def modality_dir(modality: str) -> str:
    """by-modality level 1, as the lab knows it: 'MR' -> 'MR0000.MOD'."""
    mod = safe_component(modality, placeholder="", max_bytes=16)
    return f"{mod}0000.MOD" if mod else "UNKNOWN.MOD"


def station_dir(station: str) -> str:
    return f"{safe_component(station, placeholder='UNKNOWN')}.STA"


def day_dir(study_date: str) -> str:
    return f"{study_date or '00000000'}.DAY"


def uid_dir(study_uid: str) -> str:
    return f"{safe_component(study_uid)}.UID"


def series_number_dir(series_number: int | None) -> str:
    number = series_number if series_number is not None and series_number >= 0 else 0
    return f"{number:06d}.SER"


def patient_dir(patient_name: str, patient_id: str) -> str:
    """by-patient level 1: 'DOE^JOHN', '12345' -> 'DOE_JOHN_12345'."""
    name = safe_component(patient_name, placeholder="NONAME", max_bytes=BASE_MAX // 2)
    pid = safe_component(patient_id, placeholder="NOID", max_bytes=BASE_MAX // 2)
    return f"{name}_{pid}"


def study_dir(study_date: str, description: str) -> str:
    """by-patient level 2: '20040609', 'Brain MRI' -> '20040609_Brain_MRI'."""
    date = study_date or "00000000"
    desc = safe_component(description, placeholder="")
    return f"{date}_{desc}" if desc else date


def series_dir(series_number: int | None, description: str) -> str:
    """by-patient level 3: 2, 'T1 axial' -> '000002_T1_axial' (sorts by number)."""
    number = series_number_dir(series_number).removesuffix(".SER")
    desc = safe_component(description, placeholder="")
    return f"{number}_{desc}" if desc else number


def instance_file(instance_number: int | None) -> str:
    """Instance files sort by InstanceNumber: 7 -> '000007.dcm'."""
    number = instance_number if instance_number is not None and instance_number >= 0 else 0
    return f"{number:06d}.dcm"
