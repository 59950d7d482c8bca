"""What the parser nodes (``yaml``, ``xml``, ``html``) share about JavaScript values: the order
of an object's keys and how ``String()`` writes a number."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["is_array_index", "js_number_text", "js_ordered", "js_ordered_keys"]


def is_array_index(key: str) -> bool:
    """Whether JavaScript orders ``key`` as an array index (``"0"``, ``"12"``, not ``"01"``)."""
    return (
        key.isdigit() and key.isascii() and (key == "0" or key[0] != "0") and int(key) < 2**32 - 1
    )


def js_ordered_keys(mapping: dict[str, Any]) -> dict[str, Any]:
    """``mapping`` with its keys in the order JavaScript enumerates an object's: array indexes
    first, ascending, then the others as they were added."""
    if not any(is_array_index(k) for k in mapping):
        return mapping
    indexes = sorted((k for k in mapping if is_array_index(k)), key=int)
    ordered = {k: mapping[k] for k in indexes}
    ordered.update((k, v) for k, v in mapping.items() if not is_array_index(k))
    return ordered


def js_ordered(value: Any) -> Any:
    """:func:`js_ordered_keys` of every object in ``value``."""
    if isinstance(value, dict):
        return {k: js_ordered(v) for k, v in js_ordered_keys(value).items()}
    if isinstance(value, list):
        return [js_ordered(v) for v in value]
    return value


def js_number_text(value: float | int) -> str:
    """``String(number)``: ``1e+21``, ``0.000025``, ``1e-7``, ``NaN``, ``-Infinity``."""
    if isinstance(value, int):
        return str(value) if abs(value) < 10**21 else js_number_text(float(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    digits, exponent = _shortest(abs(value))
    point = exponent + 1  # where the decimal point goes in the digits
    if len(digits) <= point <= 21:
        return sign + digits + "0" * (point - len(digits))
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * (-point) + digits
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{mantissa}e{'+' if exponent >= 0 else '-'}{abs(exponent)}"


def _shortest(value: float) -> tuple[str, int]:
    """The shortest digits that read back as ``value`` and the decimal exponent of the first."""
    mantissa, _, exponent = f"{value!r}".partition("e")
    if not exponent:
        whole, _, frac = mantissa.partition(".")
        frac = frac.rstrip("0")
        if whole != "0":
            digits = (whole + frac).rstrip("0") or "0"
            return digits, len(whole) - 1
        stripped = frac.lstrip("0")
        return stripped, -(len(frac) - len(stripped)) - 1
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac.rstrip("0")).rstrip("0") or "0"
    return digits, int(exponent)
