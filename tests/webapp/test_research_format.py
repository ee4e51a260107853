"""Template filters of the research dashboards: intervals that cannot be computed."""

from __future__ import annotations

from types import SimpleNamespace

from django.template import Context, Template

from webapp.research.templatetags.research_format import (
    NO_INTERVAL_REASON,
    decimal,
    interval,
    interval_bounds,
    percent,
)

NA = f'<span class="na" title="{NO_INTERVAL_REASON}">n/a</span>'


def test_percent_and_decimal_format_numbers() -> None:
    assert percent(0.953) == "95.3"
    assert percent(0.5, 0) == "50"
    assert decimal(0.12345) == "0.123"
    assert decimal(0.12345, 4) == "0.1235"


def test_interval_formats_both_bounds() -> None:
    assert interval({"ci_low": 0.512, "ci_high": 0.8741}, "decimal") == "(0.512–0.874)"
    assert interval({"ci_low": 0.5, "ci_high": 0.95}, "percent") == "(50.0–95.0)"
    assert interval({"ci_low": 0.01234, "ci_high": 0.5}, "decimal:4") == "(0.0123–0.5000)"
    # Dashboards hand over dataclasses as well as dicts.
    assert interval_bounds(SimpleNamespace(ci_low=0.1, ci_high=0.2)) == "0.100–0.200"


def test_missing_interval_renders_na_with_a_reason() -> None:
    assert NO_INTERVAL_REASON == "too few cases to compute an interval"
    assert interval({"ci_low": None, "ci_high": None}, "percent") == f"({NA})"
    assert interval({"ci_low": 0.2, "ci_high": None}, "decimal") == f"({NA})"
    assert interval(None, "decimal") == f"({NA})"
    assert interval_bounds({}, "decimal") == NA


def test_template_shows_na_instead_of_empty_dashes() -> None:
    template = Template(
        "{% load research_format %}{{ m.estimate|percent }} {{ m|interval:'percent' }}"
    )
    html = template.render(Context({"m": {"estimate": 0.75, "ci_low": None, "ci_high": None}}))
    assert html == f"75.0 ({NA})"
    assert "–" not in html
