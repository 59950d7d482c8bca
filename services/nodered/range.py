"""The ``range`` node (Node-RED ``16-range.js``): map a number from one range to another
(scale, clamp or roll), optionally rounding."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from nodered_semantics.js import UNDEFINED, is_nan, js_number, js_value
from nodered_semantics.msg_paths import get_property, set_property
from nodered_semantics.support import range_numbers
from services.nodered.common import Sent

__all__ = ["run_range"]


def run_range(node: Mapping[str, Any], msg: dict[str, Any]) -> Sent:
    prop = str(node.get("property") or "payload")
    value = get_property(msg, prop)
    if value is UNDEFINED:
        return [(0, msg)]
    n = js_number(value)
    if is_nan(n):
        return []  # Node-RED logs "not a number" and sends nothing
    minin, maxin, minout, maxout = range_numbers(node)
    action = node.get("action")
    if action == "drop" and (n < minin or n > maxin):
        return []
    if action == "clamp":
        n = minin if n < minin else n
        n = maxin if n > maxin else n
    if action == "roll":
        divisor = maxin - minin
        n = math.fmod(math.fmod(n - minin, divisor) + divisor, divisor) + minin
    result = ((n - minin) / (maxin - minin) * (maxout - minout)) + minout
    if node.get("round"):
        result = math.floor(result + 0.5)  # Math.round: halves go up
    set_property(msg, prop, js_value(float(result)))
    return [(0, msg)]
