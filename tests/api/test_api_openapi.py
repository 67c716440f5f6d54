"""The OpenAPI schema tells the truth: what it calls valid, the server accepts, and the reverse.

* every run option (but the booleans) carries its range, and each bound is the core's
  (``nas_core.config``): the value at the edge is accepted by the core, one step past it
  refused, so the schema and the rules cannot drift apart unnoticed;
* "exactly one of" the architecture ids is a ``oneOf``, and names are described by a
  pattern; for a list of tricky values, the schema (checked by a JSON Schema validator)
  and the server agree on every one;
* an empty ``cursor`` is refused by the schema and by the server (422) on every route;
* a multipart file that is not an archive is a documented 400.
"""

from __future__ import annotations

import io
import itertools
import math
from typing import Any

import jsonschema_rs
import pytest
from pydantic import ValidationError

from api.main import create_app
from api.schemas import ArchitectureIn, DatasetRegister
from api.services.configs import CROSS_FIELD, SearchConfigIn
from nas_core.config import ConfigError, RetrainConfig, SearchConfig

SCHEMA = create_app().openapi()
COMPONENTS = SCHEMA["components"]["schemas"]
CONFIGS = {"SearchConfigIn": SearchConfig, "RetrainConfigIn": RetrainConfig}
BOUND_KEYS = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "enum", "pattern", "maxItems"}
# Other options a bound can only be reached with (the cross-field rules).
CONTEXT: dict[str, dict[str, Any]] = {"k": {"channels": 256}}


def _branch(prop: dict[str, Any]) -> dict[str, Any]:
    """The non-null branch of an optional property."""
    return next((b for b in prop.get("anyOf", []) if b.get("type") != "null"), prop)


def _bounded(prop: dict[str, Any]) -> bool:
    branch = _branch(prop)
    if branch.get("type") == "boolean":
        return True
    if "prefixItems" in branch:  # a fixed-length array: each item bounded
        return all(BOUND_KEYS & set(item) for item in branch["prefixItems"])
    if branch.get("type") == "array":  # a list: its length and its items bounded
        return "maxItems" in branch and "maxLength" in branch.get("items", {})
    return bool(BOUND_KEYS & set(branch))


def _core_refuses(config_cls: type, name: str, value: Any) -> bool:
    context = dict(CONTEXT.get(name, {}))
    if name == "w_lr_min" and isinstance(value, float) and value > 0:
        context["w_lr"] = min(value, math.nextafter(10.0, 0.0))  # w_lr_min may reach w_lr
    try:
        config_cls.from_dict({**context, name: value})
    except ConfigError as exc:
        return name in exc.errors
    return False


def _edges(prop: dict[str, Any]) -> list[tuple[Any, bool]]:
    """(value, accepted?) at each numeric bound of a property's schema: the edge and one step past it."""
    branch = _branch(prop)
    integer = branch.get("type") == "integer"

    def step(x: float, direction: float) -> Any:
        return int(x + direction) if integer else math.nextafter(float(x), direction * math.inf)

    edges: list[tuple[Any, bool]] = []
    if "minimum" in branch:
        edges += [(step(branch["minimum"], 0) if integer else float(branch["minimum"]), True),
                  (step(branch["minimum"], -1), False)]
    if "maximum" in branch:
        edges += [(int(branch["maximum"]) if integer else float(branch["maximum"]), True),
                  (step(branch["maximum"], 1), False)]
    if "exclusiveMinimum" in branch:
        edges += [(branch["exclusiveMinimum"], False), (step(branch["exclusiveMinimum"], 1), True)]
    if "exclusiveMaximum" in branch:
        edges += [(branch["exclusiveMaximum"], False), (step(branch["exclusiveMaximum"], -1), True)]
    return edges


@pytest.mark.parametrize("model", sorted(CONFIGS))
def test_every_option_has_its_range_in_the_schema(model: str) -> None:
    properties = COMPONENTS[model]["properties"]
    unbounded = sorted(name for name, prop in properties.items() if not _bounded(prop))
    assert unbounded == [], f"{model}: add the core's range of {unbounded} to api.services.configs.RANGES"
    assert _branch(properties["steps_per_epoch"])["minimum"] == 1


@pytest.mark.parametrize("model", sorted(CONFIGS))
def test_each_bound_in_the_schema_is_the_cores(model: str) -> None:
    config_cls = CONFIGS[model]
    wrong = []
    checked = 0
    for name, prop in COMPONENTS[model]["properties"].items():
        branch = _branch(prop)
        values = _edges(prop)
        values += [(v, True) for v in branch.get("enum", [])] + ([("not-an-option", False)] if "enum" in branch else [])
        if "prefixItems" in branch:  # arch_betas: both items at their edges together
            values += [([v, v], ok) for v, ok in _edges(branch["prefixItems"][0])]
        if "items" in branch:  # case lists
            limit, longest = int(branch["maxItems"]), int(branch["items"]["maxLength"])
            values += [([f"c{i}" for i in range(limit)], True), ([f"c{i}" for i in range(limit + 1)], False),
                       (["a", "a"], False), ([""], False), (["x" * longest], True), (["x" * (longest + 1)], False)]
        for value, accepted in values:
            checked += 1
            if _core_refuses(config_cls, name, value) == accepted:
                wrong.append(f"{name}={str(value)[:40]}: schema says {'valid' if accepted else 'invalid'}")
    assert wrong == [], f"{model}: the schema and nas_core.config disagree:\n" + "\n".join(wrong)
    assert checked > 60


def test_cross_field_rules_are_described_where_no_schema_can_state_them() -> None:
    properties = COMPONENTS["SearchConfigIn"]["properties"]
    for name in CROSS_FIELD:
        assert "422" in properties[name]["description"], name


# --- the schema and the server agree, value by value -------------------------------------------------


def _server_accepts(model: type, value: Any) -> bool:
    try:
        model.model_validate(value)
    except ValidationError:
        return False
    return True


def test_exactly_one_architecture_is_a_oneof_that_the_server_agrees_with() -> None:
    schema = COMPONENTS["ArchitectureIn"]
    assert len(schema["oneOf"]) == 3
    validator = jsonschema_rs.validator_for(schema)
    choices: dict[str, list[Any]] = {"genotype_id": ["gen_1"], "search_job_id": ["job_1"], "baseline": ["unet"]}
    tried = 0
    for states in itertools.product(("absent", "null", "given"), repeat=3):
        body = {key: None if state == "null" else choices[key][0]
                for key, state in zip(choices, states, strict=True) if state != "absent"}
        assert validator.is_valid(body) == _server_accepts(ArchitectureIn, body), body
        tried += 1
    assert tried == 27
    assert validator.is_valid({"baseline": "unet"}) and not validator.is_valid({"genotype_id": "g", "baseline": "unet"})


NAMES = ["a", " a ", "\xa0a", "a" * 200, "a" * 201, " " + "a" * 199, " " * 5, "\xa0", "\u3000", "\ufeff",
         "\x85a", "a\x00b", "a\nb", "\u2028", "", "dataset é 2", "\t"]


@pytest.mark.parametrize("name", NAMES, ids=[repr(n)[:20] for n in NAMES])
def test_the_schema_and_the_server_agree_on_names(name: str) -> None:
    validator = jsonschema_rs.validator_for(COMPONENTS["DatasetRegister"])
    body = {"name": name, "path": "phantom"}
    assert validator.is_valid(body) == _server_accepts(DatasetRegister, body)


def test_paths_and_formats_as_the_server_takes_them() -> None:
    validator = jsonschema_rs.validator_for(COMPONENTS["DatasetRegister"])
    for body in ({"name": "x", "path": "p\x00"}, {"name": "x", "path": "p", "format": "dicomish"},
                 {"name": "x", "path": ""}):
        assert not validator.is_valid(body), body
    assert validator.is_valid({"name": "x", "path": "phantom", "format": "nnunet"})


def test_an_empty_cursor_is_refused_by_the_schema_and_the_server(client, alice, add_job, add_dataset) -> None:
    job = add_job(alice[0], add_dataset(alice[0]))
    routes = [path for path, ops in SCHEMA["paths"].items()
              if any(p["name"] == "cursor" for p in ops.get("get", {}).get("parameters", []))]
    assert len(routes) >= 3, routes
    for path in routes:
        cursor = next(p for p in SCHEMA["paths"][path]["get"]["parameters"] if p["name"] == "cursor")
        assert _branch(cursor["schema"])["minLength"] == 1, path
        response = client.get(path.format(job_id=job) + "?cursor=", headers=alice[1])
        assert response.status_code == 422 and "query.cursor" in response.json()["error"]["details"]["fields"]


def test_a_file_that_is_not_an_archive_is_a_documented_400(client, alice) -> None:
    operation = SCHEMA["paths"]["/v1/datasets"]["post"]
    assert "not_an_archive" in operation["responses"]["400"]["description"]
    assert "not_an_archive" in COMPONENTS["DatasetUpload"]["properties"]["file"]["description"]
    files = {"file": ("notes.zip", io.BytesIO(b"just some text, not an archive"))}
    response = client.post("/v1/datasets", files=files, data={"name": "x"}, headers=alice[1])
    assert response.status_code == 400 and response.json()["error"]["code"] == "not_an_archive"


def test_integers_are_json_schemas_integers() -> None:
    """2.0 is an integer to JSON Schema, so the server takes it; 2.5, true and "2" are not, and it refuses them."""
    validator = jsonschema_rs.validator_for(COMPONENTS["SearchConfigIn"])
    for value, valid in ((2, True), (2.0, True), (2.5, False), (True, False), ("2", False)):
        assert validator.is_valid({"epochs": value}) == valid, value
        assert _server_accepts(SearchConfigIn, {"epochs": value}) == valid, value
