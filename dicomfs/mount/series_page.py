"""The series of one study, as index.html shows them when its row is clicked: each with a
thumbnail of its middle image, its number, description, modality, images, size and
directory in the page's view. A hidden file of the mount's root, found by name only
(views.series_page_name), that the page opens in a frame below the study's row."""

from __future__ import annotations

from importlib import resources

from ..store import views
from ..store.index import Index
from . import page

_STYLE = resources.files(__package__).joinpath("series_page.css").read_text("utf-8")

# Its style and the thumbnails of the mount, nothing else: no script at all.
_POLICY = f"default-src 'none'; style-src '{page.source_hash(_STYLE)}'; img-src 'self' file:"


def render(index: Index, study: int, view: str) -> bytes:
    """The page of the study's series, by series number."""
    paths = views.series_paths(index.conn, study, view)
    found = index.conn.execute(
        """SELECT se.id, se.series_number, se.description, se.modality,
                  coalesce(sum(sc.instances), 0), coalesce(sum(sc.bytes), 0)
           FROM series se LEFT JOIN series_counts sc ON sc.series = se.id
           WHERE se.study = ? GROUP BY se.id ORDER BY se.series_number, se.id""",
        (study,),
    )
    rows = []
    for series, number, description, modality, instances, size in found:
        shown = "" if number is None else f"#{number}"  # SeriesNumber is optional
        directories = "".join(
            f"<code><bdi>{page.escape(path.removeprefix(view + '/'))}</bdi></code>"
            for path in paths.get(series, [])
        )
        rows.append(
            f'<tr><td><img src="{views.thumbnail_name(series)}" alt="series {shown}" '
            f'loading="lazy"><td class=n>{shown}'
            f"<td class=d>{page.escape(description)}<td class=m>{page.escape(modality)}"
            f"<td class=n>{instances} img<td class=n>{page.size_text(size)}<td>{directories}"
        )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">',
            f"<style>{_STYLE}</style></head><body><table>",
            *rows,
            "</table></body></html>",
            "",
        ]
    ).encode("utf-8")
