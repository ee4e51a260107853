"""PNG rendering of the dashboard figures: size, content, text, and the missing-font error."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference.evaluation.svg import unit_square_chart
from webapp.research.figures import FigureRenderError, figure_response, font_files, svg_to_png

TITLE = "ROC one-vs-rest, svm 1 (unit: patient, n = 6)"


def _chart(title: str = TITLE) -> str:
    return unit_square_chart(
        title, "1 - specificity", "Sensitivity", [("HT", [0.0, 0.5, 1.0], [0.0, 0.8, 1.0])]
    )


def _gray(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.int16)


@pytest.fixture(autouse=True)
def _fonts_installed() -> None:
    if not font_files():
        pytest.skip("no font under /usr/share/fonts; install fonts-dejavu-core")


def test_png_has_twice_the_svg_size_on_white() -> None:
    image = Image.open(io.BytesIO(svg_to_png(_chart())))
    assert image.format == "PNG"
    assert image.size == (720, 2 * (360 + 18))
    gray = _gray(svg_to_png(_chart()))
    assert gray[0, 0] == 255  # white background, not transparent black
    # Not blank: the frame, curve and text leave many dark pixels.
    assert (gray < 128).sum() > 2000


def test_title_text_is_drawn() -> None:
    with_title = _gray(svg_to_png(_chart()))
    without_title = _gray(svg_to_png(_chart(title="")))
    # The title sits in the top 28 SVG pixels (56 in the PNG); only it differs there.
    band_with, band_without = with_title[:56], without_title[:56]
    assert (band_without < 128).sum() == 0
    assert (band_with < 128).sum() > 300
    # A longer title covers more of the band: the glyphs come from a real font.
    longer = _gray(svg_to_png(_chart(title=TITLE + " and more words")))[:56]
    assert (longer < 128).sum() > (band_with < 128).sum()


def test_missing_fonts_refuse_to_render(tmp_path: Path) -> None:
    with pytest.raises(FigureRenderError, match="install a font package"):
        svg_to_png(_chart(), dirs=(str(tmp_path),))


def test_unknown_format_is_404() -> None:
    response = figure_response(_chart(), "roc-svm-1", "gif")
    assert response.status_code == 404
    assert b"'gif' is not one of svg, png" in response.content


def test_notes_extend_the_svg_below_the_chart() -> None:
    from webapp.research.figures import NOTE_LINE_HEIGHT_PX, add_svg_notes

    chart = _chart()
    noted = add_svg_notes(chart, ["No CE curve: no case has the label CE.", "Second & last"])

    taller = 360 + 18 + 2 * NOTE_LINE_HEIGHT_PX + 6
    assert f'height="{taller}" viewBox="0 0 360 {taller}"' in noted
    assert '<text x="8" y="394" class="figure-note">No CE curve' in noted
    assert "Second &amp; last</text>" in noted
    assert noted.rstrip().endswith("</svg>")
    assert add_svg_notes(chart, []) == chart
    image = Image.open(io.BytesIO(svg_to_png(noted)))
    assert image.size == (720, 2 * taller)
    # The notes are drawn: the band below the legend has dark pixels.
    assert (_gray(svg_to_png(noted))[2 * (360 + 18) :] < 128).sum() > 100


def test_notes_need_a_sized_root() -> None:
    from webapp.research.figures import add_svg_notes

    with pytest.raises(ValueError, match="no width, height and viewBox"):
        add_svg_notes('<svg xmlns="http://www.w3.org/2000/svg"></svg>', ["note"])
