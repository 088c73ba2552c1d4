"""Reading the console's forms: each field checked, a ValueError naming it and what to type."""

from __future__ import annotations

from datetime import datetime

from flask import request

from proxy import operations
from proxy.keys import parse_list


def text(name: str, *, required: bool = False) -> str:
    value = request.form.get(name, "").strip()[:200]
    if required and not value:
        raise ValueError(f"Fill in {name.replace('_', ' ')}.")
    return value


def whole(name: str, *, minimum: int, most: int = operations.MOST) -> int | None:
    """A whole number field within what its column holds; None when left empty."""
    raw = request.form.get(name, "").strip()
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19) or not minimum <= int(raw) <= most:
        raise ValueError(
            f"{name.replace('_', ' ')} must be a whole number from {minimum} to {most}."
        )
    return int(raw)


def day(name: str):
    raw = request.form.get(name, "").strip()
    if not raw:
        return None
    try:
        return datetime.strptime(raw, "%Y-%m-%d").date()
    except ValueError:
        raise ValueError(f"{name} must be a day as YYYY-MM-DD.") from None


def limit(name: str, *, minimum: int, required: bool = False) -> int | None:
    """A whole number a column holds, or None when left empty (no limit)."""
    raw = request.form.get(name, "").strip()
    shown = name.replace("_", " ")
    if not raw and required:
        raise ValueError(f"Fill in {shown}.")
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()) or not minimum <= int(raw) <= operations.MOST:
        empty = "" if required else ", or leave it empty for no limit"
        raise ValueError(
            f"{shown} must be a whole number from {minimum} to {operations.MOST}{empty}."
        )
    return int(raw)


def names(name: str) -> tuple[str, ...] | None:
    """A comma-separated list (models, addresses, APIs); None when left empty (no list)."""
    raw = request.form.get(name, "").strip()
    if len(raw) > 2000:
        raise ValueError(f"{name} is too long: at most 2000 characters.")
    return parse_list(raw) if raw else None
