"""Minimal SVG line charts on the unit square, for ROC and calibration figures.

Written by hand so the report needs no plotting library.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

PALETTE = ("#1b6ca8", "#c2410c", "#15803d", "#7c3aed", "#a16207", "#be185d")
# One dash pattern per series (None draws a solid line), so curves that lie on top of each
# other, such as several ROC curves with AUC 1, stay distinguishable and in a grey print.
DASHES: tuple[str | None, ...] = (None, "8 4", "2 3", "10 3 2 3", "4 4", "12 2 2 2 2 2")


def trapezoid_area(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Return the area under the polyline through the points (for an ROC curve: its AUC).

    None when fewer than two points are given, since no area can be measured then.
    """
    if len(xs) < 2:
        return None
    return sum(
        (float(xs[i]) - float(xs[i - 1])) * (float(ys[i]) + float(ys[i - 1])) / 2.0
        for i in range(1, len(xs))
    )


def unit_square_chart(
    title: str,
    x_label: str,
    y_label: str,
    series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    *,
    diagonal: bool = True,
    size_px: int = 360,
    auc_in_legend: bool = False,
) -> str:
    """Return an SVG document plotting each (name, x values, y values) series on [0, 1]^2.

    Each series gets its own colour and dash pattern. With ``auc_in_legend`` (ROC charts) each
    legend entry also gives the area under that curve, e.g. "HT (AUC 1.00)".
    """
    margin = 48
    plot = size_px - 2 * margin
    height = size_px + 18 * len(series)

    def px(x: float, y: float) -> tuple[float, float]:
        return margin + x * plot, margin + (1.0 - y) * plot

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size_px}" height="{height}" '
        f'viewBox="0 0 {size_px} {height}" font-family="sans-serif" font-size="11">',
        f'<text x="{size_px / 2}" y="20" text-anchor="middle" font-size="13">{escape(title)}</text>',
        f'<rect x="{margin}" y="{margin}" width="{plot}" height="{plot}" fill="none" stroke="#444"/>',
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x, y = px(tick, 0.0)
        parts.append(f'<text x="{x:.1f}" y="{y + 14:.1f}" text-anchor="middle">{tick:g}</text>')
        x, y = px(0.0, tick)
        parts.append(f'<text x="{x - 6:.1f}" y="{y + 4:.1f}" text-anchor="end">{tick:g}</text>')
    parts.append(
        f'<text x="{size_px / 2}" y="{margin + plot + 32}" text-anchor="middle">{escape(x_label)}</text>'
    )
    parts.append(
        f'<text x="14" y="{margin + plot / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {margin + plot / 2})">{escape(y_label)}</text>'
    )
    if diagonal:
        (x0, y0), (x1, y1) = px(0, 0), px(1, 1)
        parts.append(
            f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y1}" stroke="#999" stroke-dasharray="4 3"/>'
        )
    for index, (name, xs, ys) in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        dash = DASHES[index % len(DASHES)]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        points = " ".join(
            f"{px(float(x), float(y))[0]:.1f},{px(float(x), float(y))[1]:.1f}"
            for x, y in zip(xs, ys, strict=True)
        )
        if points:
            parts.append(
                f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"{dash_attr}/>'
            )
        legend_y = size_px + 4 + 18 * index
        parts.append(
            f'<line x1="{margin}" y1="{legend_y}" x2="{margin + 20}" y2="{legend_y}" '
            f'stroke="{color}" stroke-width="3"{dash_attr}/>'
        )
        label = name
        if auc_in_legend:
            area = trapezoid_area(xs, ys)
            label += f" (AUC {area:.2f})" if area is not None else " (AUC n/a)"
        parts.append(f'<text x="{margin + 26}" y="{legend_y + 4}">{escape(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
