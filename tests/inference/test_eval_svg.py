"""SVG line charts: legend AUC values and one dash pattern per curve."""

from __future__ import annotations

import re

import pytest

from inference.evaluation.svg import trapezoid_area, unit_square_chart

PERFECT = ([0.0, 0.0, 1.0], [0.0, 1.0, 1.0])


def _roc(series: list[tuple[str, list[float], list[float]]], **kwargs: bool) -> str:
    return unit_square_chart("ROC", "1 - specificity", "Sensitivity", series, **kwargs)


def test_legend_gives_each_curve_its_auc() -> None:
    svg = _roc(
        [("HT", *PERFECT), ("CE", [0.0, 0.5, 1.0], [0.0, 0.5, 1.0]), ("HT+CE", *PERFECT)],
        auc_in_legend=True,
    )
    legend = re.findall(r"<text [^>]*>([^<]*\(AUC [^<]*)</text>", svg)
    assert legend == ["HT (AUC 1.00)", "CE (AUC 0.50)", "HT+CE (AUC 1.00)"]


def test_legend_without_the_flag_has_plain_names() -> None:
    svg = _roc([("HT", *PERFECT)])
    assert "AUC" not in svg
    assert ">HT</text>" in svg


def test_coinciding_curves_get_distinct_dash_patterns() -> None:
    svg = _roc([("HT", *PERFECT), ("CE", *PERFECT), ("HT+CE", *PERFECT)], auc_in_legend=True)
    curves = re.findall(r"<polyline [^>]*/>", svg)
    assert len(curves) == 3
    dashes = [re.search(r'stroke-dasharray="([^"]*)"', c) for c in curves]
    patterns = [m[1] if m else "solid" for m in dashes]
    assert len(set(patterns)) == 3
    colors = {re.search(r'stroke="([^"]*)"', c)[1] for c in curves}  # type: ignore[index]
    assert len(colors) == 3
    # The legend swatches carry the same patterns, so the reader can match them.
    swatches = re.findall(r'<line [^>]*stroke-width="3"[^>]*/>', svg)
    swatch_patterns = [
        m[1] if (m := re.search(r'stroke-dasharray="([^"]*)"', s)) else "solid" for s in swatches
    ]
    assert swatch_patterns == patterns


@pytest.mark.parametrize(
    ("xs", "ys", "expected"),
    [
        ([0.0, 0.0, 1.0], [0.0, 1.0, 1.0], 1.0),
        ([0.0, 1.0], [0.0, 1.0], 0.5),
        ([0.0, 0.25, 0.5, 1.0], [0.0, 0.5, 0.75, 1.0], 0.65625),
        ([0.0], [0.0], None),
    ],
)
def test_trapezoid_area(xs: list[float], ys: list[float], expected: float | None) -> None:
    assert trapezoid_area(xs, ys) == (pytest.approx(expected) if expected is not None else None)
