"""A thumbnail of each series, for index.html: its middle image, made once, when first
asked for, so that a user recognises their scan at a glance.

Kept in STORE/.dicomfs/thumbs/, named by the SeriesInstanceUID (as a path component),
never in a series' directory: a `cp -r` of a series copies DICOM only. One is made
again when the series has received an instance since, and goes with its series
(remove, sweep). Decoded by pydicom with numpy, and pylibjpeg's plugins for JPEG,
JPEG-LS and JPEG 2000; written as PNG by Pillow. A series whose image cannot be
decoded (a transfer syntax no plugin reads, no pixel data) gets a placeholder that
says so, kept the same way, so the decoding is not tried again on every view.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path

import numpy as np

from . import files
from .index import INDEX_DIR
from .index.engine import Connection

log = logging.getLogger(__name__)


def _no_record(record: logging.LogRecord) -> bool:
    return False


def _quiet_decoders() -> None:
    """pydicom logs each decoder plugin's failure as an ERROR with its traceback, from
    loggers of pydicom.pixels; for a thumbnail that is an expected outcome, and _make
    says it once, at INFO. (What a decoder raises is still raised.)"""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("pydicom.pixels"):
            logger = logging.getLogger(name)
            if _no_record not in logger.filters:
                logger.addFilter(_no_record)


THUMBS_DIR = f"{INDEX_DIR}/thumbs"
SIZE = 128  # pixels, the longer side
MOST_BYTES = 3 * SIZE * SIZE + 4096  # a PNG of SIZE x SIZE RGB, uncompressed, is smaller


def of_series(store: Path, conn: Connection, series: int) -> bytes | None:
    """The series' thumbnail as PNG, made now if there is none newer than its last
    instance; None if the series is gone."""
    row = conn.execute(
        "SELECT series_uid, coalesce(last_received, 0) FROM series WHERE id = ?", (series,)
    ).fetchone()
    if row is None:
        return None
    uid, received = row
    rel = f"{THUMBS_DIR}/{files.uid_component(uid)}.png"
    kept = _read_if_newer(store, rel, received)
    if kept is not None:
        return kept
    made = _make(store, conn, series)
    with contextlib.suppress(OSError):  # a cache: a full disk only means making it again
        files.write_atomically(store, rel, io.BytesIO(made))
    return made


def remove(store: Path, series_uids: list[str]) -> None:
    """Remove these series' thumbnails (their series are gone)."""
    files.delete_files(
        store, [f"{THUMBS_DIR}/{files.uid_component(uid)}.png" for uid in series_uids]
    )


def sweep(store: Path, conn: Connection) -> int:
    """Remove the thumbnails of series no longer in the index; how many went."""
    try:
        names = os.listdir(store / THUMBS_DIR)
    except FileNotFoundError:
        return 0
    kept = {
        f"{files.uid_component(uid)}.png"
        for (uid,) in conn.execute("SELECT series_uid FROM series")
    }
    gone = [f"{THUMBS_DIR}/{name}" for name in names if name not in kept]
    files.delete_files(store, gone)
    return len(gone)


def _read_if_newer(store: Path, rel: str, than: float) -> bytes | None:
    try:
        with files.opened(store) as root:
            fd = files.open_beneath(root, rel, os.O_RDONLY)
            with os.fdopen(fd, "rb") as kept:
                if os.fstat(kept.fileno()).st_mtime < than:
                    return None
                return kept.read()
    except OSError:
        return None


def _make(store: Path, conn: Connection, series: int) -> bytes:
    (count,) = conn.execute("SELECT count(*) FROM instances WHERE series = ?", (series,)).fetchone()
    middle = conn.execute(
        """SELECT path FROM instances WHERE series = ?
           ORDER BY instance_number, file_name LIMIT 1 OFFSET ?""",
        (series, count // 2),
    ).fetchone()
    if middle is None:
        return placeholder("no image")
    try:
        with files.opened(store) as root, open(middle[0], "rb", opener=files.opener(root)) as f:
            pixels = _pixels(f)
    except Exception as exc:  # any file from anywhere: what pydicom or a plugin raises varies
        log.info("no thumbnail of %s: %s", middle[0], exc)
        return placeholder("no preview")
    return placeholder("no image") if pixels is None else _png(pixels)


def _pixels(f: io.BufferedReader) -> np.ndarray | None:
    """The middle frame of the file's image, as 8-bit grey or RGB for a screen; None if
    it has none (a report, a waveform, a plan)."""
    from pydicom import dcmread  # here: only making a picture needs the decoders
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    _quiet_decoders()
    ds = dcmread(f, force=True)  # force: a bare data set, which the index takes too
    if "TransferSyntaxUID" not in ds.file_meta:  # a bare one: as pydicom read it
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian
            if implicit
            else ExplicitVRLittleEndian
            if little
            else ExplicitVRBigEndian
        )
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        return None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    pixels = ds.pixel_array  # YBR comes as RGB
    if frames > 1:
        pixels = pixels[frames // 2]
    kind = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if kind == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)
    if kind.startswith("MONOCHROME"):
        pixels = apply_voi_lut(apply_modality_lut(pixels, ds), ds)
        pixels = _stretched(pixels.astype(np.float64))
        return 255 - pixels if kind == "MONOCHROME1" else pixels
    if pixels.ndim == 3 and pixels.dtype != np.uint8:
        return _stretched(pixels.astype(np.float64))
    return pixels


def _stretched(pixels: np.ndarray) -> np.ndarray:
    """Values to 0-255, the darkest and brightest 0.5 % clipped (a few hot pixels would
    otherwise leave the image black)."""
    low, high = np.percentile(pixels, (0.5, 99.5))
    if high <= low:
        high = low + 1
    return (np.clip((pixels - low) / (high - low), 0, 1) * 255).astype(np.uint8)


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    image = Image.fromarray(pixels)
    image.thumbnail((SIZE, SIZE))
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    return out.getvalue()


def placeholder(text: str) -> bytes:
    """A grey square that says why there is no picture, in letters still legible when
    the page shows it at half its size."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("L", (SIZE, SIZE), 232)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=22)
    lines = text.split()  # a word a line: "no" / "preview"
    for number, line in enumerate(lines):
        width = draw.textlength(line, font=font)
        y = SIZE / 2 + (number - len(lines) / 2) * 26
        draw.text(((SIZE - width) / 2, y), line, fill=80, font=font)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()
