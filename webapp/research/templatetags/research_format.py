"""Template filters for the research dashboards."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

register = template.Library()


@register.filter
def percent(value: float | None, digits: int = 1) -> str:
    """Format a fraction (0.953) as a percentage ("95.3"); "–" when missing."""
    if value is None:
        return "–"
    return f"{value * 100:.{digits}f}"


@register.filter
def decimal(value: float | None, digits: int = 3) -> str:
    """Format a number with ``digits`` decimals; "–" when missing."""
    if value is None:
        return "–"
    return f"{value:.{digits}f}"


NO_INTERVAL_REASON = "too few cases to compute an interval"


def _field(item: Any, name: str) -> Any:
    if item is None:
        return None
    if isinstance(item, Mapping):
        return item.get(name)
    return getattr(item, name, None)


@register.filter
def interval_bounds(item: Any, style: str = "decimal") -> SafeString:
    """Render the ``ci_low``/``ci_high`` of ``item`` as "0.512–0.874", without parentheses.

    ``style`` is "percent" or "decimal", optionally with digits after a colon ("decimal:4").
    When either bound is missing (too few cases, e.g. n = 4) the result is "n/a" inside a span
    whose title gives the reason, instead of a bare "–––".
    """
    kind, _, digits_text = style.partition(":")
    low, high = _field(item, "ci_low"), _field(item, "ci_high")
    if low is None or high is None:
        return format_html('<span class="na" title="{}">n/a</span>', NO_INTERVAL_REASON)
    formatter = percent if kind == "percent" else decimal
    args = (int(digits_text),) if digits_text else ()
    return format_html("{}–{}", formatter(low, *args), formatter(high, *args))


@register.filter
def interval(item: Any, style: str = "decimal") -> SafeString:
    """Like ``interval_bounds``, in parentheses: "(0.512–0.874)" or "(n/a)"."""
    return format_html("({})", interval_bounds(item, style))


@register.filter
def lookup(mapping: dict[str, Any] | None, key: str) -> Any:
    """Return ``mapping[key]``, or None when the mapping or key is missing."""
    if not mapping:
        return None
    return mapping.get(key)
