"""Template filters for the research dashboards."""

from __future__ import annotations

from typing import Any

from django import template

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


@register.filter
def lookup(mapping: dict[str, Any] | None, key: str) -> Any:
    """Return ``mapping[key]``, or None when the mapping or key is missing."""
    if not mapping:
        return None
    return mapping.get(key)
