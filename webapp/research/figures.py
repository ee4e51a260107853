"""Dashboard figures as downloads: the SVG from ``inference.evaluation.svg``, or a PNG of it.

The PNG is rendered on the server by resvg (the ``resvg-py`` wheel, no system library) at twice
the SVG's size, for publications. resvg draws text only with fonts it can find, and slim
container images have none, so rendering refuses to run without one rather than return a
figure without its title, axes and legend. The Dockerfile installs ``fonts-dejavu-core``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from functools import lru_cache
from html import escape
from pathlib import Path

import resvg_py
from django.http import HttpResponse

logger = logging.getLogger(__name__)

FILE_FORMATS = ("svg", "png")
PNG_ZOOM = 2
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts")
FONT_SUFFIXES = (".ttf", ".otf", ".ttc")
NOTE_LINE_HEIGHT_PX = 16
# The root element as inference.evaluation.svg writes it: width, height and a matching viewBox.
SVG_ROOT_SIZE = re.compile(r'<svg [^>]*?width="(\d+)" height="(\d+)" viewBox="0 0 (\d+) (\d+)"')


def add_svg_notes(svg: str, notes: Sequence[str]) -> str:
    """Return ``svg`` made taller by one line per note, with the notes written below the chart.

    Raises ValueError when the root element has no width, height and viewBox to extend.
    """
    if not notes:
        return svg
    match = SVG_ROOT_SIZE.search(svg)
    if match is None:
        raise ValueError("The SVG root element has no width, height and viewBox to extend.")
    width, height = int(match[1]), int(match[2])
    taller = height + NOTE_LINE_HEIGHT_PX * len(notes) + 6
    root = (
        match[0]
        .replace(f'height="{height}"', f'height="{taller}"')
        .replace(f'viewBox="0 0 {width} {height}"', f'viewBox="0 0 {width} {taller}"')
    )
    lines = [
        f'<text x="8" y="{height + NOTE_LINE_HEIGHT_PX * (index + 1)}" class="figure-note">'
        f"{escape(note)}</text>"
        for index, note in enumerate(notes)
    ]
    body = svg[: match.start()] + root + svg[match.end() :]
    end = body.rindex("</svg>")
    return body[:end] + "\n".join(lines) + "\n" + body[end:]


class FigureRenderError(Exception):
    """The PNG cannot be rendered; the message names the package to install."""


@lru_cache(maxsize=8)
def font_files(dirs: tuple[str, ...] = FONT_DIRS) -> tuple[str, ...]:
    """Return the font files found under ``dirs``, sorted (read once per process)."""
    found: list[str] = []
    for folder in dirs:
        root = Path(folder)
        if root.is_dir():
            found.extend(
                str(path)
                for path in root.rglob("*")
                if path.suffix.lower() in FONT_SUFFIXES and path.is_file()
            )
    return tuple(sorted(found))


def svg_to_png(svg: str, *, zoom: int = PNG_ZOOM, dirs: tuple[str, ...] = FONT_DIRS) -> bytes:
    """Render an SVG document to PNG bytes on a white background at ``zoom`` times its size."""
    fonts = font_files(dirs)
    if not fonts:
        raise FigureRenderError(
            f"No font file under {', '.join(dirs)}, so the figure's text cannot be drawn; "
            "install a font package (Debian: fonts-dejavu-core) and try again, or download "
            "the SVG instead."
        )
    preferred = "DejaVu Sans" if any("DejaVuSans" in Path(f).name for f in fonts) else None
    return bytes(
        resvg_py.svg_to_bytes(
            svg_string=svg,
            background="#ffffff",
            zoom=float(zoom),
            skip_system_fonts=True,
            font_files=list(fonts),
            sans_serif_family=preferred,
        )
    )


def figure_response(svg: str, stem: str, file_format: str) -> HttpResponse:
    """Return the figure as an attachment named ``<stem>.<file_format>``."""
    if file_format == "svg":
        response = HttpResponse(svg, content_type="image/svg+xml")
    elif file_format == "png":
        try:
            png = svg_to_png(svg)
        except FigureRenderError as error:
            logger.error("PNG figure %s not rendered: %s", stem, error)
            return HttpResponse(str(error), status=503, content_type="text/plain")
        response = HttpResponse(png, content_type="image/png")
    else:
        return HttpResponse(
            f"Figure format {file_format!r} is not one of {', '.join(FILE_FORMATS)}.",
            status=404,
            content_type="text/plain",
        )
    safe_stem = "".join(c if c.isalnum() or c in "._-" else "-" for c in stem)
    response["Content-Disposition"] = f'attachment; filename="{safe_stem}.{file_format}"'
    return response
