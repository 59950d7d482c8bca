"""A form generated from a workflow's input JSON Schema, and the submitted form back to a payload.

:class:`InputForm` turns the schema into a tree of :class:`FormField` (strings, numbers,
integers and booleans as inputs, enums as selects, ``email``/``date``/``date-time``/``uri``
formats as the matching input types, nested objects as fieldsets, arrays as a list of items
with add and remove), and reads a submission back (:meth:`InputForm.submit`): each value is
converted by its field's type, then the payload is checked with the same JSON Schema
validation the API gives a job's input (``service_runtime.sdk._schema_problems``, which
``JobService.create`` runs; :mod:`fluxo.console.schema_errors` words its problems in the page's
language). Every problem, a value that is not a number or a schema error,
lands beside the field it is about (:func:`field_errors` maps the API's locations, such as
``input.items[0].qty``, to field names).

Field names are the payload path, keys joined by ``.`` (``customer.email``, ``items.0.sku``),
with ``%``, ``.`` and ``#`` in a key escaped; an array's item count travels in ``<name>.#``. Add
and remove are buttons that submit ``_action=add:<array>`` or ``_action=remove:<item>``: the
server answers with the form one item longer or shorter, so it works without JavaScript.

The form is bounded: past ``MAX_DEPTH`` levels, ``MAX_FIELDS`` fields or ``MAX_ITEMS`` items of
an array, a part of the schema is edited as JSON text instead.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from fluxo.console.schema_errors import schema_problems

__all__ = [
    "MAX_DEPTH",
    "MAX_FIELDS",
    "MAX_ITEMS",
    "FormField",
    "FormSubmission",
    "InputForm",
    "Option",
    "field_errors",
]

MAX_DEPTH: Final = 8
MAX_FIELDS: Final = 400
MAX_ITEMS: Final = 100
ACTION: Final = "_action"
ROOT: Final = "input"
"""The one field of a form whose schema is not an object (or absent): the payload as JSON."""

Widget = Literal[
    "text",
    "email",
    "url",
    "date",
    "datetime",
    "time",
    "number",
    "integer",
    "checkbox",
    "select",
    "json",
    "fieldset",
    "array",
]
Gettext = Callable[[str], str]
_FORMATS: Final[Mapping[str, Widget]] = {
    "email": "email",
    "idn-email": "email",
    "uri": "url",
    "iri": "url",
    "date": "date",
    "date-time": "datetime",
    "time": "time",
}
_LOCAL_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$")
_REQUIRED = re.compile(r"^'((?:[^'\\]|\\.)*)' is a required property$")
_MISSING: Final = object()


@dataclass(frozen=True, slots=True)
class Option:
    value: str
    label: str


@dataclass(frozen=True, slots=True)
class FormField:
    """One control of the form, or a group of them (``fieldset``, ``array``).

    Attributes:
        name: the HTML name, the payload path (see the module).
        label: the schema's ``title``, else the key (an array item: its number).
        widget: which control to draw.
        value: the text the control shows (``checked`` for a checkbox).
        children: a fieldset's fields, an array's items.
        attrs: HTML attributes the schema implies (``min``, ``max``, ``step``, ``maxlength``).
        removable: an array item that may be removed (the array stays above ``minItems``).
        addable: an array that may grow (below ``maxItems``).
    """

    name: str
    label: str
    widget: Widget
    required: bool = False
    description: str | None = None
    value: str = ""
    checked: bool = False
    options: tuple[Option, ...] = ()
    children: tuple[FormField, ...] = ()
    attrs: tuple[tuple[str, str], ...] = ()
    removable: bool = False
    addable: bool = False

    @property
    def dom_id(self) -> str:
        """An HTML id for the control (names may hold characters ids should not)."""
        return "f-" + re.sub(r"[^A-Za-z0-9_-]", lambda m: f"_{ord(m.group()):x}_", self.name)

    def walk(self) -> Iterable[FormField]:
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass(frozen=True, slots=True)
class FormSubmission:
    """What a submission gave: the fields to show again, and a payload when there is no error.

    ``action`` is set when the submission only added or removed an array item: show the form
    again, create nothing.
    """

    fields: tuple[FormField, ...]
    payload: Any
    errors: Mapping[str, tuple[str, ...]]
    action: str | None = None

    @property
    def ok(self) -> bool:
        return self.action is None and not self.errors


@dataclass(slots=True)
class _Build:
    """The state of one pass over the schema."""

    submitted: Mapping[str, str] | None
    gettext: Gettext
    root: Mapping[str, Any]
    action: tuple[str, str] | None = None
    errors: dict[str, list[str]] = field(default_factory=dict)
    count: int = 0

    def error(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)


class InputForm:
    """The form of one input schema (``None``: any object, edited as JSON)."""

    def __init__(self, schema: Mapping[str, Any] | None, *, gettext: Gettext | None = None):
        self.schema = schema
        self._ = gettext or _identity

    @property
    def is_structured(self) -> bool:
        """Whether the schema gives fields (an object with properties), not one JSON box."""
        return (
            self.schema is not None
            and _is_object(self.schema)
            and bool(self._properties(self.schema))
        )

    def fields(self) -> tuple[FormField, ...]:
        """The blank form: schema defaults filled in, arrays at their smallest length."""
        fields, _payload = self._build(_Build(None, self._, self.schema or {}))
        return fields

    def submit(self, submitted: Mapping[str, str]) -> FormSubmission:
        """Read a submission: the payload, or the problems beside their fields.

        ``submitted`` maps field names to their text (the last value of a repeated name).
        """
        state = _Build(submitted, self._, self.schema or {})
        raw_action = submitted.get(ACTION, "")
        verb, _sep, target = raw_action.partition(":")
        if verb in ("add", "remove") and target:
            state.action = (verb, target)
        fields, payload = self._build(state)
        if state.action is not None:
            return FormSubmission(fields=fields, payload=None, errors={}, action=raw_action)
        if payload is _MISSING:
            payload = {}
        if self.schema is not None:
            # Also when a value could not be converted: the other fields' problems show at
            # once. A field already in error keeps only its own message (its value is missing
            # from the payload, so the schema would add a confusing "required").
            converted = set(state.errors)
            problems = schema_problems(self.schema, payload, self._)
            for name, lines in field_errors(problems, fields, self._).items():
                if name not in converted:
                    for line in lines:
                        state.error(name, line)
        errors = {name: tuple(lines) for name, lines in state.errors.items()}
        return FormSubmission(
            fields=fields, payload=None if errors else payload, errors=errors, action=None
        )

    # -- building ------------------------------------------------------------------------------

    def _build(self, state: _Build) -> tuple[tuple[FormField, ...], Any]:
        schema = self.schema
        if not self.is_structured:
            assert schema is None or isinstance(schema, Mapping)
            only = self._json_field(state, ROOT, ROOT, schema or {}, self._("Input (JSON)"), True)
            return (only[0],), only[1]
        assert schema is not None
        return self._object_children(state, "", "", schema, depth=0)

    def _properties(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        props = schema.get("properties")
        return props if isinstance(props, Mapping) else {}

    def _object_children(
        self, state: _Build, name: str, source: str, schema: Mapping[str, Any], *, depth: int
    ) -> tuple[tuple[FormField, ...], dict[str, Any]]:
        required = schema.get("required")
        required_keys = set(required) if isinstance(required, list) else set()
        fields: list[FormField] = []
        value: dict[str, Any] = {}
        for key, sub in self._properties(schema).items():
            child_name = _join(name, _escape(str(key)))
            child_source = _join(source, _escape(str(key)))
            made, got = self._field(
                state,
                child_name,
                child_source,
                _resolve(state.root, sub),
                label=str(key),
                required=key in required_keys,
                depth=depth + 1,
            )
            fields.append(made)
            if got is not _MISSING:
                value[str(key)] = got
        return tuple(fields), value

    def _field(
        self,
        state: _Build,
        name: str,
        source: str,
        schema: Mapping[str, Any],
        *,
        label: str,
        required: bool,
        depth: int,
    ) -> tuple[FormField, Any]:
        state.count += 1
        title = schema.get("title")
        label = str(title) if isinstance(title, str) and title else label
        if depth > MAX_DEPTH or state.count > MAX_FIELDS:
            return self._json_field(state, name, source, schema, label, required)
        kind = _type_of(schema)
        common = FormField(
            name=name,
            label=label,
            widget="text",
            required=required,
            description=_text(schema.get("description")),
        )
        enum = schema.get("enum")
        if enum is None and "const" in schema:
            enum = [schema["const"]]
        if isinstance(enum, list) and enum:
            return self._select(state, source, enum, schema, common)
        if kind == "object" and self._properties(schema):
            children, value = self._object_children(state, name, source, schema, depth=depth)
            made = replace(common, widget="fieldset", children=children)
            # An optional object left blank is left out, rather than sent half-filled.
            return made, value if required or _any_given(value) else _MISSING
        if kind == "array" and isinstance(schema.get("items"), Mapping):
            return self._array(state, name, source, schema, common, depth=depth)
        if kind in ("string", "number", "integer", "boolean"):
            return self._scalar(state, source, kind, schema, common)
        return self._json_field(state, name, source, schema, label, required)

    def _scalar(
        self,
        state: _Build,
        source: str,
        kind: str,
        schema: Mapping[str, Any],
        common: FormField,
    ) -> tuple[FormField, Any]:
        name: str = common.name
        default = schema.get("default", _MISSING)
        if kind == "boolean":
            if state.submitted is None:
                checked = default is True
            else:
                checked = state.submitted.get(source, "") not in ("", "false", "off")
            return replace(common, widget="checkbox", checked=checked), checked
        attrs = _attrs(schema, kind)
        widget: Widget = _FORMATS.get(str(schema.get("format")), "text")
        if kind == "number":
            widget = "number"
        elif kind == "integer":
            widget = "integer"
        if state.submitted is None:
            text = "" if default is _MISSING else _shown(default)
            return replace(common, widget=widget, value=text, attrs=attrs), _MISSING
        text = state.submitted.get(source, "")
        made = replace(common, widget=widget, value=text, attrs=attrs)
        if text.strip() == "":
            # Nothing typed: left out, so a required field says "required", not "too short".
            return made, _MISSING
        if kind == "integer":
            try:
                return made, int(text.strip())
            except ValueError:
                state.error(name, self._("Enter a whole number, such as 42."))
                return made, _MISSING
        if kind == "number":
            try:
                number = float(text.strip().replace(",", "."))
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                state.error(name, self._("Enter a number, such as 12.5."))
                return made, _MISSING
            return made, int(number) if number.is_integer() and "." not in text else number
        if widget == "datetime" and _LOCAL_DATETIME.match(text):
            # The browser's local date-time has no zone; JSON Schema's date-time needs one.
            return made, text + (":00Z" if text.count(":") == 1 else "Z")
        return made, text

    def _select(
        self,
        state: _Build,
        source: str,
        enum: Sequence[Any],
        schema: Mapping[str, Any],
        common: FormField,
    ) -> tuple[FormField, Any]:
        # An option's value is its JSON text, so numbers and booleans come back as such.
        options = tuple(Option(value=_json(v), label=_shown(v)) for v in enum)
        if not common.required:
            options = (Option(value="", label="—"), *options)
        if state.submitted is None:
            default = schema.get("default", _MISSING)
            chosen = "" if default is _MISSING else _json(default)
            if common.required and default is _MISSING:
                chosen = options[0].value
            return replace(common, widget="select", options=options, value=chosen), _MISSING
        chosen = state.submitted.get(source, "")
        made = replace(common, widget="select", options=options, value=chosen)
        if chosen == "":
            return made, _MISSING
        if chosen not in {o.value for o in options}:
            state.error(common.name, self._("Choose one of the options."))
            return made, _MISSING
        return made, json.loads(chosen)

    def _array(
        self,
        state: _Build,
        name: str,
        source: str,
        schema: Mapping[str, Any],
        common: FormField,
        *,
        depth: int,
    ) -> tuple[FormField, Any]:
        least = _bound(schema.get("minItems"), 0)
        most = min(_bound(schema.get("maxItems"), MAX_ITEMS), MAX_ITEMS)
        if state.submitted is None:
            default = schema.get("default")
            count = len(default) if isinstance(default, list) else max(least, common.required)
        else:
            count = _bound(state.submitted.get(_join(source, "#")), 0)
        count = min(count, most)
        sources = [_join(source, str(n)) for n in range(count)]
        if state.action == ("add", name) and count < most:
            sources.append("")  # read from nowhere: a blank item
        if state.action is not None and state.action[0] == "remove":
            sources = [s for n, s in enumerate(sources) if _join(name, str(n)) != state.action[1]]
        item_schema = _resolve(state.root, schema["items"])
        items: list[FormField] = []
        values: list[Any] = []
        for n, item_source in enumerate(sources):
            # A blank item reads no submitted values: give it a source no field can have.
            made, got = self._field(
                state,
                _join(name, str(n)),
                item_source if item_source else "\0",
                item_schema,
                label=self._("Item %(number)d") % {"number": n + 1},
                required=True,
                depth=depth + 1,
            )
            items.append(replace(made, removable=len(sources) > least))
            values.append(got)
        made = replace(
            common,
            widget="array",
            children=tuple(items),
            addable=len(sources) < most,
            value=str(len(sources)),
        )
        if state.submitted is None:
            return made, _MISSING
        if all(v is _MISSING for v in values) and not common.required:
            return made, _MISSING
        # A blank object item is sent as {} (its required fields then say so); a blank scalar
        # item is left out.
        blank: Any = {} if _is_object(item_schema) else _MISSING
        return made, [v if v is not _MISSING else blank for v in values if
                      v is not _MISSING or blank is not _MISSING]  # fmt: skip

    def _json_field(
        self,
        state: _Build,
        name: str,
        source: str,
        schema: Mapping[str, Any],
        label: str,
        required: bool,
    ) -> tuple[FormField, Any]:
        """A part of the schema the form does not model, edited as JSON text."""
        common = FormField(
            name=name,
            label=label,
            widget="text",
            required=required,
            description=_text(schema.get("description")),
        )
        if state.submitted is None:
            default = schema.get("default", _MISSING)
            text = "" if default is _MISSING else json.dumps(default, indent=2)
            if name == ROOT and default is _MISSING:
                text = "{}"
            return replace(common, widget="json", value=text), _MISSING
        text = state.submitted.get(source, "")
        made = replace(common, widget="json", value=text)
        if text.strip() == "":
            return made, _MISSING
        try:
            return made, json.loads(text)
        except ValueError as exc:
            if name != ROOT and _type_of(schema) is None:
                return made, text  # a value of no declared type: plain text is a string
            state.error(name, self._("This is not valid JSON: %(error)s") % {"error": str(exc)})
            return made, _MISSING


def field_errors(
    problems: Iterable[tuple[str, str]],
    fields: Sequence[FormField],
    gettext: Gettext | None = None,
) -> dict[str, list[str]]:
    """Problems located as the API locates them (``input.items[0].qty``, ``payload``), keyed
    by the name of the form field they are about: the field itself, else its nearest ancestor
    on the form, else ``""`` (the whole form)."""
    _ = gettext or _identity
    names = {f.name for top in fields for f in top.walk()}
    found: dict[str, list[str]] = {}
    for location, message in problems:
        parts = _location_parts(location)
        required = _REQUIRED.match(message)
        if required is not None:
            parts.append(required.group(1).encode().decode("unicode_escape"))
            message = _("Required.")
        name = ""
        for cut in range(len(parts), 0, -1):
            candidate = ".".join(_escape(p) for p in parts[:cut])
            if candidate in names:
                name = candidate
                break
        if not name and ROOT in names:
            name = ROOT
        found.setdefault(name, []).append(message)
    return found


def _location_parts(location: str) -> list[str]:
    """``input.items[0].qty`` as ``["items", "0", "qty"]`` (the first part names the payload)."""
    parts = re.findall(r"\.([^.\[\]]+)|\[(\d+)\]", "." + location)
    flat = [key or index for key, index in parts]
    return flat[1:]


def _resolve(root: Mapping[str, Any], schema: Any, depth: int = 0) -> Mapping[str, Any]:
    """A local ``$ref`` (``#/$defs/x``) followed; anything else as it is."""
    if not isinstance(schema, Mapping):
        return {}
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/") or depth > MAX_DEPTH:
        return schema
    target: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        target = target.get(part) if isinstance(target, Mapping) else None
    return _resolve(root, target, depth + 1) if isinstance(target, Mapping) else schema


def _type_of(schema: Mapping[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        # ["string", "null"], ["string", "integer"]: text covers them; the schema decides.
        kinds = [k for k in kind if k != "null"]
        if "string" in kinds:
            return "string"
        kind = kinds[0] if len(kinds) == 1 else None
    if kind is None and isinstance(schema.get("properties"), Mapping):
        return "object"
    return kind if isinstance(kind, str) else None


def _is_object(schema: Any) -> bool:
    return isinstance(schema, Mapping) and _type_of(schema) == "object"


def _attrs(schema: Mapping[str, Any], kind: str) -> tuple[tuple[str, str], ...]:
    found: list[tuple[str, str]] = []
    for key, attr in (("minimum", "min"), ("maximum", "max")):
        if isinstance(schema.get(key), int | float) and not isinstance(schema.get(key), bool):
            found.append((attr, _shown(schema[key])))
    if kind == "integer":
        found.append(("step", "1"))
    elif kind == "number":
        found.append(("step", "any"))
    if isinstance(schema.get("maxLength"), int):
        found.append(("maxlength", str(schema["maxLength"])))
    return tuple(found)


def _bound(value: Any, fallback: int) -> int:
    if isinstance(value, str) and value.isdigit() and len(value) < 6:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return fallback


def _any_given(value: Any) -> bool:
    return bool(value) and any(v not in (False, None) for v in value.values())


def _escape(key: str) -> str:
    return key.replace("%", "%25").replace(".", "%2E").replace("#", "%23")


def _join(prefix: str, part: str) -> str:
    return f"{prefix}.{part}" if prefix else part


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else _json(value)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _identity(text: str) -> str:
    return text
