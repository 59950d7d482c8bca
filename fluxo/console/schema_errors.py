"""A job input's JSON Schema problems, worded in the page's language.

The check is the API's (``jsonschema``'s Draft 2020-12 validator, as
``service_runtime.sdk._schema_problems`` runs it, located the same way: ``payload.items[0].qty``);
only the words differ: jsonschema writes English sentences, so each problem is worded again
from its keyword and that keyword's value, through the console's catalogue. A keyword without a
wording here keeps jsonschema's sentence after a translated lead-in.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import jsonschema

from fluxo.console.i18n import N_

__all__ = ["schema_problems"]

Gettext = Callable[[str], str]

# The value's kind as a user reads it ("a whole number", not "integer").
_TYPES = {
    "string": N_("text"),
    "integer": N_("a whole number"),
    "number": N_("a number"),
    "boolean": N_("yes or no"),
    "object": N_("a group of fields"),
    "array": N_("a list"),
    "null": N_("nothing"),
}

# keyword -> the message, with %(limit)s standing for the keyword's value.
_BY_KEYWORD = {
    "minLength": N_("Enter at least %(limit)s characters."),
    "maxLength": N_("Enter at most %(limit)s characters."),
    "pattern": N_("The value does not match the expected pattern."),
    "format": N_("Enter a valid %(limit)s."),
    "minimum": N_("Enter %(limit)s or more."),
    "maximum": N_("Enter %(limit)s or less."),
    "exclusiveMinimum": N_("Enter more than %(limit)s."),
    "exclusiveMaximum": N_("Enter less than %(limit)s."),
    "multipleOf": N_("Enter a multiple of %(limit)s."),
    "minItems": N_("Give at least %(limit)s items."),
    "maxItems": N_("Give at most %(limit)s items."),
    "minProperties": N_("Fill in at least %(limit)s fields."),
    "maxProperties": N_("Fill in at most %(limit)s fields."),
    "const": N_("The value must be %(limit)s."),
}


def schema_problems(
    schema: Mapping[str, Any], payload: Any, gettext: Gettext
) -> list[tuple[str, str]]:
    """``(location, message)`` for each way ``payload`` breaks ``schema``, in the language of
    ``gettext``. A ``required`` problem keeps jsonschema's sentence: the form reads the missing
    field's name from it (and words it "Required." itself)."""
    validator = jsonschema.Draft202012Validator(dict(schema))
    items: list[tuple[str, Any]] = (
        [(f"payload[{i}]", item) for i, item in enumerate(payload)]
        if isinstance(payload, list)
        else [("payload", payload)]
    )
    found: list[tuple[str, str]] = []
    for prefix, item in items:
        for error in validator.iter_errors(item):
            location = prefix + "".join(
                f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path
            )
            found.append((location, _worded(error, gettext)))
    return found


def _worded(error: jsonschema.ValidationError, _: Gettext) -> str:
    keyword = str(error.validator)
    value = error.validator_value
    if keyword == "required":
        return error.message
    if keyword == "type":
        wanted = value if isinstance(value, list) else [value]
        kinds = " / ".join(_(_TYPES.get(str(t), str(t))) for t in wanted)
        return _("Enter %(kind)s.") % {"kind": kinds}
    if keyword == "enum" and isinstance(value, list):
        options = ", ".join(_shown(v) for v in value)
        return _("Choose one of: %(options)s.") % {"options": options}
    if keyword == "uniqueItems":
        return _("Every item of the list must be different.")
    if keyword == "additionalProperties":
        return _("This field is not expected here: %(detail)s") % {"detail": error.message}
    message = _BY_KEYWORD.get(keyword)
    if message is not None:
        return _(message) % {"limit": _shown(value)}
    return _("Not valid: %(detail)s") % {"detail": error.message}


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
