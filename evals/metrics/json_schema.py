"""JSON-schema validity metric with a self-contained validator for a documented subset.

``jsonschema`` is not a dependency of this project, so this module implements the JSON Schema
2020-12 keywords that output-format checks need (listed in ``SUPPORTED``). A schema using any
other validation keyword is rejected when the suite is validated, so nothing is silently ignored.
Annotation keywords (title, description, format, examples...) are accepted and not asserted.
``$ref`` resolves JSON pointers inside the same schema only (``#``, ``#/$defs/...``).
``pattern`` uses ``regex.search`` semantics (close to, not identical with, ECMA-262). Patterns come
from tenants, so every match runs under a time limit (``PATTERN_TIMEOUT_S``): a catastrophic
backtracking pattern fails the case's metric with an error instead of blocking the worker.
"""

from __future__ import annotations

import json
import math
from typing import Any

import regex
from pydantic import Field

from evals.contracts import EvalCase, MetricContext, TargetOutput
from evals.metrics.base import Params
from evals.outcome import Measured, MetricFailure
from evals.replies import unfence

PATTERN_TIMEOUT_S = 0.1

ANNOTATIONS = frozenset(
    {
        "$schema", "$id", "$comment", "$anchor", "title", "description", "default", "examples",
        "format", "readOnly", "writeOnly", "deprecated", "contentMediaType", "contentEncoding",
        "$defs", "definitions",
    }
)  # fmt: skip
SUPPORTED = frozenset(
    {
        "type", "enum", "const", "minLength", "maxLength", "pattern", "minimum", "maximum",
        "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "properties", "required",
        "additionalProperties", "patternProperties", "propertyNames", "minProperties",
        "maxProperties", "dependentRequired", "items", "prefixItems", "minItems", "maxItems",
        "uniqueItems", "contains", "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "$ref",
    }
)  # fmt: skip
TYPES = frozenset({"null", "boolean", "object", "array", "number", "string", "integer"})
MAX_DEPTH = 64
MAX_ERRORS = 20


class SchemaError(ValueError):
    """The schema itself uses an unsupported keyword or is malformed."""


class JsonSchemaParams(Params):
    json_schema: dict[str, Any] | bool = Field(alias="schema")
    strip_code_fence: bool = False  # accept output wrapped in one ```json fence

    model_config = Params.model_config | {"populate_by_name": True}


def check_schema(schema: Any, path: str = "#", root: Any = None) -> None:
    """Raise :class:`SchemaError` for unsupported keywords or malformed values (recursive)."""
    root = schema if root is None else root
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise SchemaError(f"{path}: a schema must be an object or a boolean")
    for key, value in schema.items():
        where = f"{path}/{key}"
        if key in ("$defs", "definitions"):
            if not isinstance(value, dict):
                raise SchemaError(f"{where}: must be an object")
            for name, sub in value.items():
                check_schema(sub, f"{where}/{name}", root)
        elif key in ANNOTATIONS:
            continue
        elif key not in SUPPORTED:
            raise SchemaError(f"{where}: unsupported keyword {key!r}")
        else:
            _check_keyword(key, value, where, root)


def _check_keyword(key: str, value: Any, where: str, root: Any) -> None:
    if key == "type":
        names = value if isinstance(value, list) else [value]
        if not names or any(name not in TYPES for name in names):
            raise SchemaError(f"{where}: unknown type {value!r}")
    elif key == "const":
        return
    elif key == "enum":
        if not isinstance(value, list):
            raise SchemaError(f"{where}: must be an array")
    elif key in ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SchemaError(f"{where}: must be a non-negative integer")
    elif key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"):
        if not _is_number(value) or (key == "multipleOf" and value <= 0):
            raise SchemaError(f"{where}: must be a number" + (" > 0" if key == "multipleOf" else ""))
    elif key == "pattern":
        _compile(value, where)
    elif key in ("required",):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SchemaError(f"{where}: must be an array of strings")
    elif key == "dependentRequired":
        if not isinstance(value, dict) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in value.values()
        ):
            raise SchemaError(f"{where}: must map names to arrays of strings")
    elif key == "uniqueItems":
        if not isinstance(value, bool):
            raise SchemaError(f"{where}: must be a boolean")
    elif key in ("properties", "patternProperties"):
        if not isinstance(value, dict):
            raise SchemaError(f"{where}: must be an object")
        for name, sub in value.items():
            if key == "patternProperties":
                _compile(name, f"{where}/{name}")
            check_schema(sub, f"{where}/{name}", root)
    elif key in ("allOf", "anyOf", "oneOf", "prefixItems"):
        if not isinstance(value, list) or not value:
            raise SchemaError(f"{where}: must be a non-empty array of schemas")
        for i, sub in enumerate(value):
            check_schema(sub, f"{where}/{i}", root)
    elif key == "$ref":
        if not isinstance(value, str) or not (value == "#" or value.startswith("#/")):
            raise SchemaError(f"{where}: only local references ('#', '#/...') are supported")
        _resolve(root, value, where)
    else:  # single subschema keywords
        check_schema(value, where, root)


def _compile(pattern: Any, where: str) -> regex.Pattern[str]:
    if not isinstance(pattern, str):
        raise SchemaError(f"{where}: a pattern must be a string")
    try:
        return regex.compile(pattern)
    except regex.error as exc:
        raise SchemaError(f"{where}: invalid pattern: {exc}") from None


def _search(pattern: str, value: str, path: str) -> bool:
    """``regex.search`` under the time limit; a timeout is a metric error, never a pass or a hang."""
    try:
        return regex.search(pattern, value, timeout=PATTERN_TIMEOUT_S) is not None
    except TimeoutError:
        raise MetricFailure(
            f"{path or '/'}: pattern {pattern[:80]!r} took longer than {PATTERN_TIMEOUT_S} s"
        ) from None


def _resolve(root: Any, ref: str, where: str) -> Any:
    node = root
    for raw in ref[2:].split("/") if ref != "#" else []:
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise SchemaError(f"{where}: unresolvable reference {ref!r}")
    return node


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _type_ok(value: Any, name: str) -> bool:
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "number":
        return _is_number(value)
    return _is_number(value) and float(value).is_integer()  # integer: 1.0 counts, as in the spec


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: booleans are not numbers, 1 == 1.0, deep for arrays and objects."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and bool(a == b)


class _Validator:
    def __init__(self, root: Any) -> None:
        self.root = root
        self.errors: list[str] = []

    def valid(self, value: Any, schema: Any, path: str, depth: int = 0) -> bool:
        """Whether ``value`` is valid, without recording errors (for combinators)."""
        probe = _Validator(self.root)
        probe.check(value, schema, path, depth)
        return not probe.errors

    def fail(self, path: str, message: str) -> None:
        self.errors.append(f"{path or '/'}: {message}")

    def check(self, value: Any, schema: Any, path: str, depth: int = 0) -> None:
        if depth > MAX_DEPTH:
            self.fail(path, "schema nesting or $ref recursion too deep")
            return
        if schema is True:
            return
        if schema is False:
            self.fail(path, "no value is allowed here")
            return
        if "$ref" in schema:
            self.check(value, _resolve(self.root, schema["$ref"], path), path, depth + 1)
        if "type" in schema:
            names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if not any(_type_ok(value, name) for name in names):
                self.fail(path, f"expected type {' or '.join(names)}")
                return
        if "enum" in schema and not any(json_equal(value, option) for option in schema["enum"]):
            self.fail(path, "value is not one of the enum values")
        if "const" in schema and not json_equal(value, schema["const"]):
            self.fail(path, "value does not equal const")
        if isinstance(value, str):
            self._string(value, schema, path)
        elif _is_number(value):
            self._number(value, schema, path)
        elif isinstance(value, dict):
            self._object(value, schema, path, depth)
        elif isinstance(value, list):
            self._array(value, schema, path, depth)
        self._combinators(value, schema, path, depth)

    def _string(self, value: str, schema: dict[str, Any], path: str) -> None:
        if "minLength" in schema and len(value) < schema["minLength"]:
            self.fail(path, f"shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            self.fail(path, f"longer than {schema['maxLength']} characters")
        if "pattern" in schema and not _search(schema["pattern"], value, path):
            self.fail(path, f"does not match pattern {schema['pattern']!r}")

    def _number(self, value: float, schema: dict[str, Any], path: str) -> None:
        if "minimum" in schema and value < schema["minimum"]:
            self.fail(path, f"less than minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            self.fail(path, f"greater than maximum {schema['maximum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            self.fail(path, f"not greater than {schema['exclusiveMinimum']}")
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            self.fail(path, f"not less than {schema['exclusiveMaximum']}")
        if "multipleOf" in schema:
            quotient = value / schema["multipleOf"]
            if not math.isclose(quotient, round(quotient), rel_tol=1e-9, abs_tol=1e-9):
                self.fail(path, f"not a multiple of {schema['multipleOf']}")

    def _object(self, value: dict[str, Any], schema: dict[str, Any], path: str, depth: int) -> None:
        for name in schema.get("required", []):
            if name not in value:
                self.fail(path, f"missing required property {name!r}")
        for name, needs in schema.get("dependentRequired", {}).items():
            if name in value:
                for other in needs:
                    if other not in value:
                        self.fail(path, f"property {name!r} requires {other!r}")
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            self.fail(path, f"fewer than {schema['minProperties']} properties")
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            self.fail(path, f"more than {schema['maxProperties']} properties")
        properties: dict[str, Any] = schema.get("properties", {})
        patterns: dict[str, Any] = schema.get("patternProperties", {})
        for name, item in value.items():
            where = f"{path}/{name}"
            if "propertyNames" in schema:
                self.check(name, schema["propertyNames"], where, depth + 1)
            matched = name in properties
            if matched:
                self.check(item, properties[name], where, depth + 1)
            for pattern, sub in patterns.items():
                if _search(pattern, name, where):
                    matched = True
                    self.check(item, sub, where, depth + 1)
            if not matched and "additionalProperties" in schema:
                extra = schema["additionalProperties"]
                if extra is False:
                    self.fail(path, f"additional property {name!r} is not allowed")
                else:
                    self.check(item, extra, where, depth + 1)

    def _array(self, value: list[Any], schema: dict[str, Any], path: str, depth: int) -> None:
        if "minItems" in schema and len(value) < schema["minItems"]:
            self.fail(path, f"fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            self.fail(path, f"more than {schema['maxItems']} items")
        prefix: list[Any] = schema.get("prefixItems", [])
        for i, item in enumerate(value):
            if i < len(prefix):
                self.check(item, prefix[i], f"{path}/{i}", depth + 1)
            elif "items" in schema:
                self.check(item, schema["items"], f"{path}/{i}", depth + 1)
        if schema.get("uniqueItems"):
            for i in range(len(value)):
                if any(json_equal(value[i], value[j]) for j in range(i)):
                    self.fail(path, f"item {i} is a duplicate")
                    break
        if "contains" in schema and not any(
            self.valid(item, schema["contains"], path, depth + 1) for item in value
        ):
            self.fail(path, "no item matches 'contains'")

    def _combinators(self, value: Any, schema: dict[str, Any], path: str, depth: int) -> None:
        for sub in schema.get("allOf", []):
            self.check(value, sub, path, depth + 1)
        if "anyOf" in schema and not any(self.valid(value, s, path, depth + 1) for s in schema["anyOf"]):
            self.fail(path, "matches none of anyOf")
        if "oneOf" in schema:
            count = sum(self.valid(value, s, path, depth + 1) for s in schema["oneOf"])
            if count != 1:
                self.fail(path, f"matches {count} of oneOf (exactly 1 required)")
        if "not" in schema and self.valid(value, schema["not"], path, depth + 1):
            self.fail(path, "matches 'not'")
        if "if" in schema:
            branch = "then" if self.valid(value, schema["if"], path, depth + 1) else "else"
            if branch in schema:
                self.check(value, schema[branch], path, depth + 1)


def validate(instance: Any, schema: dict[str, Any] | bool) -> list[str]:
    """Validation errors of ``instance`` against a schema that passed :func:`check_schema`."""
    validator = _Validator(schema)
    validator.check(instance, schema, "")
    return validator.errors


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def json_schema(
    params: JsonSchemaParams, case: EvalCase, output: TargetOutput, ctx: MetricContext
) -> Measured:
    """1.0 when the output is JSON valid against ``params.schema``, else 0.0 (errors in detail)."""
    text = unfence(output.text) if params.strip_code_fence else output.text.strip()
    try:
        instance: Any = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        return Measured(0.0, {"errors": [f"output is not valid JSON: {exc}"[:300]]})
    errors = validate(instance, params.json_schema)
    return Measured(0.0 if errors else 1.0, {"errors": errors[:MAX_ERRORS], "error_count": len(errors)})
