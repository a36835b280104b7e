"""The written API spec (miniprogram_api_spec/openapi.yaml) agrees with the app it describes."""
from __future__ import annotations

import importlib
import re
import typing
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

import jsonschema_rs
import pytest
import schemathesis
import yaml
from flask import Flask
from pydantic import AfterValidator
from pydantic.fields import FieldInfo
from schemathesis.core.result import Err

import server
from server.api import NON_BLANK_PATTERN, NonBlank
from server.errors import AppError

SPEC_PATH = Path(__file__).resolve().parent.parent / "miniprogram_api_spec" / "openapi.yaml"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
#: Methods Werkzeug answers for every rule by itself; the spec documents only what the views implement.
IMPLICIT_METHODS = {"HEAD", "OPTIONS"}
#: Blueprints of the merchant's web console: HTML pages for staff behind a session cookie and CSRF tokens,
#: not part of the API this spec describes (the README's "Console" section lists them; tests/console tests them).
CONSOLE_BLUEPRINTS = {"console", "console_entry"}
SPEC_URI = "urn:miniprogram-api-spec"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    with SPEC_PATH.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield method.upper(), path, operation


def _rule_to_template(rule: str) -> str:
    """``/staff/<int:staff_id>`` as OpenAPI writes it: ``/staff/{staff_id}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def app_routes(app: Flask) -> set[tuple[str, str]]:
    return {
        (method, _rule_to_template(rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static" and rule.endpoint.split(".")[0] not in CONSOLE_BLUEPRINTS
        for method in (rule.methods or set()) - IMPLICIT_METHODS
    }


def test_rule_templates_are_converted() -> None:
    assert _rule_to_template("/a/<int:staff_id>/b/<key>/<path:rest>") == "/a/{staff_id}/b/{key}/{rest}"


def test_spec_documents_exactly_the_registered_routes(app: Flask, spec: dict[str, Any]) -> None:
    registered = app_routes(app)
    documented = {(method, path) for method, path, _ in _operations(spec)}
    undocumented = sorted(registered - documented)
    stale = sorted(documented - registered)
    assert not undocumented and not stale, (
        f"routes the app registers but the spec lacks: {undocumented}; "
        f"operations the spec has but the app does not register: {stale}"
    )


def test_spec_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.1.")
    loaded = schemathesis.openapi.from_path(SPEC_PATH)
    # The OpenAPI 3.1 meta-schema; it checks the document's structure but not the schemas inside it.
    loaded.validate()
    # Schemathesis builds every operation it will test; an unresolvable or malformed part fails here.
    broken = [str(result.err()) for result in loaded.get_all_operations() if isinstance(result, Err)]
    assert not broken, broken


def _local_refs(node: Any, where: str = "#") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield where, ref
        for key, value in node.items():
            yield from _local_refs(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _local_refs(value, f"{where}/{index}")


def _resolve(spec: dict[str, Any], ref: str) -> Any:
    node: Any = spec
    for token in ref.removeprefix("#/").split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        node = node[int(token)] if isinstance(node, list) else node[token]
    return node


def test_every_reference_resolves(spec: dict[str, Any]) -> None:
    unresolved = []
    for where, ref in _local_refs(spec):
        try:
            assert ref.startswith("#/")
            _resolve(spec, ref)
        except (AssertionError, KeyError, IndexError, ValueError):
            unresolved.append(f"{where}: {ref}")
    assert not unresolved, unresolved


def _schema_pointers(spec: dict[str, Any]) -> Iterator[str]:
    """JSON pointers of every Schema Object the document holds outside other schemas."""
    for name in spec["components"].get("schemas", {}):
        yield f"#/components/schemas/{name}"

    def under(node: Any, where: str) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "schema" and isinstance(value, dict):
                    yield f"{where}/{key}"
                elif key != "schemas":
                    yield from under(value, f"{where}/{key.replace('~', '~0').replace('/', '~1')}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from under(value, f"{where}/{index}")

    yield from under(spec["paths"], "#/paths")
    yield from under({k: v for k, v in spec["components"].items() if k != "schemas"}, "#/components")


def test_every_schema_is_valid_json_schema_2020_12(spec: dict[str, Any]) -> None:
    registry = jsonschema_rs.Registry([(SPEC_URI, spec)])
    problems = []
    for pointer in _schema_pointers(spec):
        schema = _resolve(spec, pointer)
        try:
            jsonschema_rs.meta.validate({"$schema": "https://json-schema.org/draft/2020-12/schema", **schema})
            # Compiling follows every $ref and compiles every pattern, as a response validator would.
            jsonschema_rs.Draft202012Validator({"$ref": SPEC_URI + quote(pointer, safe="#/~")}, registry=registry)
        except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError) as error:
            problems.append(f"{pointer}: {error}")
    assert not problems, "\n".join(problems)


def _deref(spec: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and isinstance(node.get("$ref"), str):
        node = _resolve(spec, node["$ref"])
    return node


def _envelope_parts(spec: dict[str, Any], response: Any) -> list[dict[str, Any]]:
    """The ``allOf`` parts of a response's JSON schema, each resolved; empty if it is not JSON."""
    schema = _deref(spec, response).get("content", {}).get("application/json", {}).get("schema")
    if schema is None:
        return []
    return [_deref(spec, part) for part in _deref(spec, schema).get("allOf", [schema])]


def _answers_in_envelope(spec: dict[str, Any], operation: dict[str, Any]) -> bool:
    """Whether the operation's success is the JSON envelope (the app's own API, not WeChat's callbacks)."""
    envelope = spec["components"]["schemas"]["Envelope"]
    return any(
        part is envelope
        for code, response in operation["responses"].items()
        if code.startswith("2")
        for part in _envelope_parts(spec, response)
    )


def test_operations_are_named_tagged_and_answer_something(spec: dict[str, Any]) -> None:
    declared_tags = {tag["name"] for tag in spec["tags"]}
    ids = [operation["operationId"] for _, _, operation in _operations(spec)]
    assert len(ids) == len(set(ids)), "operationIds must be unique"
    for method, path, operation in _operations(spec):
        label = f"{method} {path}"
        assert operation.get("summary") and operation.get("description"), label
        assert operation.get("tags") and set(operation["tags"]) <= declared_tags, label
        assert "security" in operation, f"{label}: say explicitly whether a token is needed"
        # A form of the member zone answers its success with a redirect to the page that shows it (303).
        assert any(code.startswith("2") or code == "303" for code in operation["responses"]), label
        if operation["security"]:
            assert "401" in operation["responses"], f"{label} takes a token, so it can answer 401"
        body_types = operation.get("requestBody", {}).get("content", {})
        if body_types:
            # Any body can be too large. A body the app validates can be wrong (422), and only JSON can
            # fail to parse (400); WeChat's callbacks refuse a bad body in WeChat's own format instead.
            expected = {"413"}
            validated = _answers_in_envelope(spec, operation) or "application/x-www-form-urlencoded" in body_types
            if validated and {"application/json", "application/x-www-form-urlencoded"} & set(body_types):
                expected.add("422")
            if validated and "application/json" in body_types:
                expected.add("400")
            missing = sorted(expected - set(operation["responses"]))
            assert not missing, f"{label} reads a body, so it can also answer {missing}"


def test_every_422_carries_data_errors(spec: dict[str, Any]) -> None:
    """The envelope's promise: a 422, whatever its code, says in ``data.errors`` which field to correct."""
    missing = []
    for method, path, operation in _operations(spec):
        if "422" not in operation["responses"]:
            continue
        base = spec["components"]["schemas"]["ErrorEnvelope"]
        parts = _envelope_parts(spec, operation["responses"]["422"])
        if not any(part is base for part in parts):
            continue  # WeChat's callbacks answer in WeChat's format, not the envelope
        data = [_deref(spec, part["properties"]["data"]) for part in parts if part is not base and "data" in part.get("properties", {})]
        branches = [_deref(spec, branch) for schema in data for branch in schema.get("oneOf", [schema])]
        if not branches or any("errors" not in branch.get("required", []) for branch in branches):
            missing.append(f"{method} {path}")
    assert not missing, f"422 responses whose data does not require `errors`: {missing}"


def test_every_component_is_used(spec: dict[str, Any]) -> None:
    """A component nothing refers to is left over from an operation that changed or went away."""
    referenced = {ref for _, ref in _local_refs(spec)}
    unused = [
        f"#/components/{kind}/{name}"
        for kind in ("schemas", "responses", "parameters")
        for name in spec["components"].get(kind, {})
        if not any(ref == f"#/components/{kind}/{name}" or ref.startswith(f"#/components/{kind}/{name}/") for ref in referenced)
    ]
    assert not unused, unused


def _error_classes() -> set[type[AppError]]:
    """Every AppError subclass in the ``errors`` modules and in whatever else is imported (the app's own modules)."""
    # Walk the files, not pkgutil: feature packages may be namespace packages, which pkgutil skips.
    root = Path(server.__file__).resolve().parent
    for path in root.rglob("errors.py"):
        importlib.import_module(".".join(("server", *path.relative_to(root).with_suffix("").parts)))
    found: set[type[AppError]] = set()
    pending = [AppError]
    while pending:
        cls = pending.pop()
        found.add(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_every_error_code_is_in_the_code_table(app: Flask, spec: dict[str, Any]) -> None:
    # ``app`` imports every module the app is built from, so errors defined outside errors.py count too.
    python_codes = {cls.code: cls for cls in _error_classes()}
    table = {entry["const"] for entry in spec["components"]["schemas"]["ErrorCode"]["oneOf"]}
    rows = dict(re.findall(r"^\|\s*(\d{5})\s*\|\s*(\d{3})\s*\|", spec["info"]["description"], re.M))

    missing = {code: cls.__name__ for code, cls in python_codes.items() if code not in table or str(code) not in rows}
    assert not missing, f"error codes missing from the spec's code table (ErrorCode and info.description): {missing}"
    unknown = sorted((table | {int(code) for code in rows}) - set(python_codes))
    assert not unknown, f"codes in the spec that no error class has: {unknown}"
    wrong_status = {code: rows[str(code)] for code, cls in python_codes.items() if rows[str(code)] != str(cls.http_status)}
    assert not wrong_status, f"the table's HTTP status disagrees with the error class: {wrong_status}"


def test_each_error_code_has_one_meaning(app: Flask) -> None:
    """Two unrelated error classes must not share a code, or a client branching on it cannot tell them apart."""
    defining: dict[int, list[type[AppError]]] = {}
    for cls in _error_classes():
        if "code" in vars(cls):
            defining.setdefault(cls.code, []).append(cls)
    clashes = {
        code: sorted(f"{cls.__module__}.{cls.__qualname__}" for cls in classes)
        for code, classes in defining.items()
        if any(not (issubclass(a, b) or issubclass(b, a)) for a in classes for b in classes)
    }
    assert not clashes, f"error codes used by unrelated classes: {clashes}"


#: Request models whose schema in the spec has another name.
SPEC_NAMES = {
    "TemplateBody": "PosterTemplateBody",
    "TemplatePatchBody": "PosterTemplatePatchBody",
    "RejectBody": "RefundRejectBody",
    "ContractBody": "ContractCreateBody",
    "ItemBody": "RedemptionItemBody",
    "ItemPatchBody": "RedemptionItemPatchBody",
    "ContactBody": "RedemptionContact",
}


def _refuses_blank(field: FieldInfo) -> bool:
    return any(isinstance(item, AfterValidator) and item.func is NonBlank.__metadata__[0].func for item in _metadata(field))


def _metadata(field: FieldInfo) -> list[Any]:
    found, pending = list(field.metadata), [field.annotation]
    while pending:
        annotation = pending.pop()
        if typing.get_origin(annotation) is typing.Annotated:
            found.extend(annotation.__metadata__)
        pending.extend(typing.get_args(annotation))
    return found


def test_required_text_is_not_blank_in_the_spec(app: Flask, spec: dict[str, Any]) -> None:
    """Each field the server refuses when blank carries the spec's NON_BLANK_PATTERN, and only those do."""
    from tests.test_column_bounds import request_models

    schemas = spec["components"]["schemas"]
    server_side = {
        (SPEC_NAMES.get(cls.__name__, cls.__name__), name)
        for cls in request_models(app)
        for name, field in cls.model_fields.items()
        if _refuses_blank(field)
    }
    assert all(schema in schemas for schema, _ in server_side), sorted(s for s, _ in server_side if s not in schemas)
    in_spec = {
        (schema, name)
        for schema, definition in schemas.items()
        for name, prop in definition.get("properties", {}).items()
        if isinstance(prop, dict) and prop.get("pattern") == NON_BLANK_PATTERN
    }
    # The landing page's form is read by the member API's LeadBody; a username has a pattern of its own, stricter still.
    assert in_spec == server_side - {("CreateStaffBody", "username")} | {("LandingLeadForm", "contact_name")}


@pytest.mark.parametrize(
    ("schema", "body", "valid"),
    [
        ("CreateStaffBody", {"username": "ops.lee", "password": "correct-horse", "role": "operations"}, True),
        ("CreateStaffBody", {"username": "ops.lee", "password": "short12", "role": "operations"}, False),
        ("CreateStaffBody", {"username": "ab", "password": "correct-horse", "role": "operations"}, False),
        ("CreateStaffBody", {"username": "ops lee", "password": "correct-horse", "role": "operations"}, False),
        ("DecisionBody", {"action": "approve"}, True),
        ("DecisionBody", {"action": "unfreeze", "reason": ""}, True),
        ("DecisionBody", {"action": "freeze", "reason": "刷单"}, True),
        ("DecisionBody", {"action": "reject"}, False),
        ("DecisionBody", {"action": "disable", "reason": ""}, False),
        ("DecisionBody", {"action": "freeze", "reason": "\x1c"}, False),
        ("MaterialBody", {"kind": "image_text", "title": "t", "body": "b"}, True),
        ("MaterialBody", {"kind": "video", "title": "t", "url": "https://v.example.com/1.mp4"}, True),
        ("MaterialBody", {"kind": "poster", "title": "t", "poster_template_id": 1}, True),
        ("MaterialBody", {"kind": "image_text", "title": "t"}, False),
        ("MaterialBody", {"kind": "image_text", "title": "t", "body": " \f"}, False),
        ("MaterialBody", {"kind": "video", "title": "t"}, False),
        ("MaterialBody", {"kind": "video", "title": "t", "url": ""}, False),
        ("MaterialBody", {"kind": "poster", "title": "t"}, False),
        ("MaterialBody", {"kind": "poster", "title": "t", "poster_template_id": None}, False),
        ("MaterialBody", {"kind": "image_text", "title": "t", "body": "b", "poster_template_id": 1}, False),
        ("MaterialBody", {"kind": "image_text", "title": "t", "body": "b", "poster_template_id": None}, True),
    ],
)
def test_the_spec_refuses_what_the_server_refuses(spec: dict[str, Any], schema: str, body: dict[str, Any], valid: bool) -> None:
    """Rules across fields, and limits the services check, are in the request schemas (each has a server test)."""
    registry = jsonschema_rs.Registry([(SPEC_URI, spec)])
    validator = jsonschema_rs.Draft202012Validator({"$ref": f"{SPEC_URI}#/components/schemas/{schema}"}, registry=registry)
    assert validator.is_valid(body) is valid
