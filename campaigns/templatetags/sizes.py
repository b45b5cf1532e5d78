"""`{% load sizes %}`: byte counts in binary units (KiB, MiB, GiB), as docs/kernels.md and the
limits are written. Django's filesizeformat divides by 1024 too but says "MB", which reads as
10^6 bytes next to limits given in MiB."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()

UNITS = ("KiB", "MiB", "GiB", "TiB")


@register.filter
def binary_size(value: Any) -> str:
    """12 bytes, 1.5 KiB, 64 MiB, 2.3 GiB: one decimal at most, none when it is zero. A value
    that is not a number of bytes renders as empty text."""
    try:
        size = int(value)
    except (TypeError, ValueError):
        return ""
    if abs(size) < 1024:
        return f"{size}\xa0byte{'' if abs(size) == 1 else 's'}"
    scaled = float(size)
    for unit in UNITS:
        scaled /= 1024
        if abs(scaled) < 1024 or unit == UNITS[-1]:
            break
    text = f"{scaled:.1f}".removesuffix(".0")
    return f"{text}\xa0{unit}"
