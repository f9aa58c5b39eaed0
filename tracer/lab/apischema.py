"""apischema: custom resource definitions for the lab API server, from deploy/crds/*.yaml.

What the real API server does with a custom object on create and update
(apiextensions-apiserver/pkg/registry/customresource/strategy.go, and apiserver's
handlers): prune fields the structural schema does not name (unless
x-kubernetes-preserve-unknown-fields), apply defaults, validate against the
openAPIV3Schema (here with jsonschema: the OpenAPI keywords the CRDs use map onto draft 4;
nullable and x-kubernetes-int-or-string are translated), then the x-kubernetes-validations
CEL rules. The lab cannot evaluate CEL: each rule the CRDs carry has a Python twin in
CEL_TWINS keyed by the rule's exact text, and a CRD with a rule that has no twin is refused at
load time, so a rule cannot be skipped silently. Errors come back as field causes for a 422.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

import yaml

CRD_DIR = Path(__file__).resolve().parents[2] / "deploy" / "crds"
Obj = dict[str, Any]

# metadata.name of a custom object: a DNS-1123 subdomain (apimachinery validation.IsDNS1123Subdomain).
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def duration_seconds(text: Any) -> float | None:
    """Go's time.ParseDuration for the h/m/s forms the CRD's pattern lets through."""
    m = _DURATION.match(text) if isinstance(text, str) and text else None
    if m is None:
        return None
    h, mi, s = (int(g or 0) for g in m.groups())
    return h * 3600.0 + mi * 60.0 + s


def _dur_between(value: Any, low: float, high: float) -> bool:
    d = duration_seconds(value)
    return d is not None and low <= d <= high


# The Python twin of every CEL rule in deploy/crds (`self` is the object the rule sits on).
CEL_TWINS: dict[str, Callable[[Obj], bool]] = {
    "has(self.pods) != has(self.nodes)": lambda s: ("pods" in s) != ("nodes" in s),
    "duration(self.duration) >= duration('1s') && duration(self.duration) <= duration('1h')":
        lambda s: _dur_between(s.get("duration"), 1, 3600),
    "!has(self.since) || duration(self.since) <= duration('1h')":
        lambda s: "since" not in s or _dur_between(s.get("since"), 0, 3600),
    "has(self.names) || has(self.selector)": lambda s: "names" in s or "selector" in s,
    "(has(self.names) && size(self.names) > 0) != (has(self.all) && self.all)":
        lambda s: bool(s.get("names")) != (s.get("all") is True),
}


@dataclass(frozen=True)
class Cause:
    """One field error of a 422 (metav1.StatusCause)."""

    reason: str        # FieldValueInvalid, FieldValueRequired, ...
    field: str         # spec.filters.ports[3]
    message: str       # Invalid value: 70000: ...


@dataclass(frozen=True)
class CRD:
    group: str
    version: str
    plural: str
    singular: str
    kind: str
    list_kind: str
    short_names: tuple[str, ...]
    namespaced: bool
    status: bool                    # the status subresource
    schema: Obj = field(hash=False, compare=False)

    @property
    def resource(self) -> str:
        return f"{self.group}/{self.plural}"


def load_crds(directory: Path = CRD_DIR) -> dict[tuple[str, str, str], CRD]:
    """The CRDs of deploy/crds, by (group, version, plural); none where there is no deploy/ (an
    installed package: the demo needs none). ValueError for a CEL rule without a twin."""
    crds: dict[tuple[str, str, str], CRD] = {}
    for path in sorted(directory.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        spec, names = doc["spec"], doc["spec"]["names"]
        for v in spec["versions"]:
            schema = v["schema"]["openAPIV3Schema"]
            _check_rules(schema, path)
            crd = CRD(spec["group"], v["name"], names["plural"], names.get("singular", names["plural"]),
                      names["kind"], names.get("listKind", names["kind"] + "List"),
                      tuple(names.get("shortNames", ())), spec["scope"] == "Namespaced",
                      "status" in (v.get("subresources") or {}), schema)
            crds[(crd.group, crd.version, crd.plural)] = crd
    return crds


def _check_rules(schema: Obj, path: Path) -> None:
    for rule in schema.get("x-kubernetes-validations", []):
        if rule["rule"] not in CEL_TWINS:
            raise ValueError(f"{path.name}: CEL rule {rule['rule']!r} has no twin in tracer/lab/apischema.py")
    for sub in schema.get("properties", {}).values():
        _check_rules(sub, path)
    if isinstance(schema.get("items"), dict):
        _check_rules(schema["items"], path)


def prune_and_default(schema: Obj, value: Any) -> Any:
    """The object as the API server stores it: unknown fields dropped, defaults filled in
    (apiextensions-apiserver/pkg/apiserver/schema/pruning and defaulting). metadata is the
    server's own and left alone."""
    if isinstance(value, dict) and schema.get("type") == "object":
        props = schema.get("properties")
        if props is None or schema.get("x-kubernetes-preserve-unknown-fields"):
            return value
        out = {}
        for key, sub in value.items():
            if key in props:
                out[key] = sub if key == "metadata" else prune_and_default(props[key], sub)
        for key, sub_schema in props.items():
            if key not in out and "default" in sub_schema:
                out[key] = copy.deepcopy(sub_schema["default"])
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune_and_default(schema["items"], v) for v in value]
    return value


def _to_jsonschema(schema: Obj) -> Obj:
    out: Obj = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-") or key in ("description", "default", "nullable", "format"):
            continue
        if key == "properties":
            out[key] = {k: _to_jsonschema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _to_jsonschema(value)
        else:
            out[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if schema.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def _path(parts: Any) -> str:
    text = ""
    for p in parts:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else str(p))
    return text


def _quote(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else str(value)


def _cause(err: Any) -> Cause:        # a jsonschema.ValidationError
    where = _path(err.absolute_path)
    v, kw = err.instance, err.validator
    if kw == "required":
        missing = re.search(r"'(.*)' is a required property", err.message)
        name = missing.group(1) if missing else ""
        return Cause("FieldValueRequired", f"{where}.{name}" if where else name, "Required value")
    if kw == "enum":
        supported = ", ".join(_quote(x) for x in err.validator_value if x is not None)
        return Cause("FieldValueNotSupported", where, f"Unsupported value: {_quote(v)}: supported values: {supported}")
    if kw == "maxLength":
        return Cause("FieldValueTooLong", where, f"Too long: may not be more than {err.validator_value} bytes")
    if kw == "maxItems":
        return Cause("FieldValueTooMany", where, f"Too many: {len(v)}: must have at most {err.validator_value} items")
    if kw == "type":
        want = err.validator_value if isinstance(err.validator_value, str) else err.validator_value[0]
        got = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
               float: "number", type(None): "null"}.get(type(v), "value")
        return Cause("FieldValueTypeInvalid", where,
                     f'Invalid value: "{got}": {where} in body must be of type {want}: "{got}"')
    text = {"pattern": f"{where} in body should match '{err.validator_value}'",
            "minimum": f"{where} in body should be greater than or equal to {err.validator_value}",
            "maximum": f"{where} in body should be less than or equal to {err.validator_value}",
            "minLength": f"{where} in body should be at least {err.validator_value} chars long",
            "minItems": f"{where} in body should have at least {err.validator_value} items"}.get(kw, err.message)
    shown = _quote(v) if not isinstance(v, (dict, list)) else "{...}"
    return Cause("FieldValueInvalid", where, f"Invalid value: {shown}: {text}")


def _cel(schema: Obj, value: Any, parts: list[Any], causes: list[Cause]) -> None:
    if isinstance(value, dict):
        for rule in schema.get("x-kubernetes-validations", []):
            if not CEL_TWINS[rule["rule"]](value):
                why = rule.get("message") or "failed rule: " + rule["rule"]
                causes.append(Cause("FieldValueInvalid", _path(parts), f'Invalid value: "object": {why}'))
        for key, sub in schema.get("properties", {}).items():
            if key in value and key != "metadata":
                _cel(sub, value[key], [*parts, key], causes)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _cel(schema["items"], item, [*parts, i], causes)


def validate(crd: CRD, obj: Obj) -> list[Cause]:
    """Field errors of an object already pruned and defaulted; [] when valid."""
    causes: list[Cause] = []
    meta: Obj = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
    name = meta.get("name", "")
    if not isinstance(name, str) or not name:
        causes.append(Cause("FieldValueRequired", "metadata.name", "Required value: name or generateName is required"))
    elif len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
        causes.append(Cause("FieldValueInvalid", "metadata.name",
                            f'Invalid value: "{name[:300]}": a lowercase RFC 1123 subdomain must consist of lower '
                            "case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
                            "character"))
    for value in (meta.get("labels") or {}).values():
        if not isinstance(value, str) or len(value) > 63:
            causes.append(Cause("FieldValueInvalid", "metadata.labels",
                                f'Invalid value: "{str(value)[:100]}": must be no more than 63 characters'))
    import jsonschema  # type: ignore[import-untyped]     # the test extras' (kubernetes-validate's)

    validator = jsonschema.Draft4Validator(_to_jsonschema(crd.schema))
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    causes += [_cause(e) for e in errors]
    if not causes:
        _cel(crd.schema, obj, [], causes)
    return causes
