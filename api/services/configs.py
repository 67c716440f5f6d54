"""Run configs at the API boundary: typed request models derived from ``nas_core.config``.

The request models (``SearchConfigIn``, ``RetrainConfigIn``) are generated from the
frozen dataclasses, so a field added to the core appears in the API and its OpenAPI
schema without being listed twice. They check types (strictly: ``true`` is not an
epoch count) and refuse unknown keys; the core's ``from_dict`` then checks ranges and
relations (K divides channels...) and raises ``ConfigError`` -> 422 per field.

The core states its ranges as code, which a schema cannot read, so ``RANGES`` writes each
one again as JSON Schema for the OpenAPI document (schema only: the core stays the one
that enforces them, with its own messages). ``tests/api/test_api_openapi.py`` checks
each bound against the core (the edge accepted, one step past it refused), and that
every option but the booleans has one, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Union

from pydantic import (
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    create_model,
)

from nas_core.config import (
    AUGMENTATIONS,
    MAX_BUDGET_MINUTES,
    MAX_STEPS_PER_EPOCH,
    OPTIMIZER_NAMES,
    SEED_MAX,
    RetrainConfig,
    SearchConfig,
)

# Floats must be finite: JSON bodies may carry NaN/Infinity, which no range check refuses for every
# field (`grad_clip > 0` holds for Infinity) and which PostgreSQL's JSONB cannot store.
FiniteFloat = Annotated[StrictFloat, AllowInfNan(False)]


def _integral(value: Any) -> Any:
    """1.0 as 1: JSON Schema's integers include numbers with a zero fraction (1.5, true and "1" stay refused)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


IntegralInt = Annotated[StrictInt, BeforeValidator(_integral)]
_STRICT: dict[Any, Any] = {int: IntegralInt, float: FiniteFloat, bool: StrictBool, str: StrictStr}


def _strict(annotation: Any) -> Any:
    """The same type with scalars made strict and floats finite (tuples and optionals keep their shape)."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = tuple(_strict(a) for a in typing.get_args(annotation))
        return Union[args]  # noqa: UP007 (built from a runtime tuple)
    if origin is tuple:
        return tuple[tuple(_strict(a) for a in typing.get_args(annotation))]  # type: ignore[misc]
    return _STRICT.get(annotation, annotation)


NO_NUL = r"^[^\x00]*$"  # PostgreSQL cannot store U+0000 in text (JSONB included)
# nas_core.config.DEVICE_PATTERN, enforced here too: Python's `$` also matches before a final
# newline ("cpu\n"), the schema's (and pydantic's) only at the end.
DEVICE = Annotated[StrictStr, StringConstraints(pattern=r"^(auto|cpu|cuda(:[0-9]{1,3})?)$")]
_CASES = {"maxItems": 100_000, "uniqueItems": True,
          "items": {"minLength": 1, "maxLength": 200, "pattern": NO_NUL}}
_UNIT = {"minimum": 0, "exclusiveMaximum": 1}  # [0, 1)

# nas_core.config's single-field rules as JSON Schema ("each": every item of a fixed-length array).
COMMON_RANGES: dict[str, dict[str, Any]] = {
    "seed": {"minimum": 0, "maximum": SEED_MAX},
    "epochs": {"minimum": 1, "maximum": 10_000},
    "image_size": {"minimum": 16, "maximum": 1024},
    "batch_size": {"minimum": 1, "maximum": 512},
    "num_workers": {"minimum": 0, "maximum": 64},
    "cpu_threads": {"minimum": 1, "maximum": 256},
    "steps_per_epoch": {"minimum": 1, "maximum": MAX_STEPS_PER_EPOCH},
    "time_budget_minutes": {"exclusiveMinimum": 0, "maximum": MAX_BUDGET_MINUTES},
    "augmentation": {"enum": list(AUGMENTATIONS)},
    "foreground_oversampling": {"minimum": 0, "maximum": 1},
    "val_cases": _CASES,
    "test_cases": _CASES,
}
RANGES: dict[type, dict[str, dict[str, Any]]] = {
    SearchConfig: {
        **COMMON_RANGES,
        "warmup_epochs": {"minimum": 0, "maximum": 10_000},
        "channels": {"minimum": 4, "maximum": 256},
        "nodes": {"minimum": 1, "maximum": 6},
        "depth": {"minimum": 1, "maximum": 6},
        "k": {"minimum": 1, "maximum": 256, "description": "must divide channels (checked with it: 422 otherwise)"},
        "w_lr": {"exclusiveMinimum": 0, "exclusiveMaximum": 10},
        "w_lr_min": {"minimum": 0, "exclusiveMaximum": 10,
                     "description": "at most w_lr (checked with it: 422 otherwise)"},
        "w_momentum": _UNIT,
        "w_weight_decay": _UNIT,
        "arch_weight_decay": _UNIT,
        "arch_betas": {"each": _UNIT},
        "arch_lr": _UNIT,
        "grad_clip": {"exclusiveMinimum": 0, "maximum": 1e6},
        "val_fraction": _UNIT,
        "max_params": {"minimum": 1_000, "maximum": 10**9},
        "latency_weight": {"minimum": 0, "maximum": 100},
        "latency_target_ms": {"exclusiveMinimum": 0, "maximum": 1e7},
        "latency_channels": {"minimum": 4, "maximum": 256},
        "latency_image_size": {"minimum": 16, "maximum": 2048},
        "eval_every": {"minimum": 1, "maximum": 10_000},
        "early_stop_patience": {"minimum": 1, "maximum": 10_000},
    },
    RetrainConfig: {
        **COMMON_RANGES,
        "lr": {"exclusiveMinimum": 0, "exclusiveMaximum": 10},
        "optimizer": {"enum": list(OPTIMIZER_NAMES)},
        "channels": {"minimum": 4, "maximum": 256},
        "weight_decay": _UNIT,
        "val_fraction": {"exclusiveMinimum": 0, "exclusiveMaximum": 1},
    },
}
CROSS_FIELD = frozenset({"k", "w_lr_min"})  # rules relating two options: no JSON Schema can state them


def schema_rule(rule: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """A ``json_schema_extra`` adding ``rule`` to a field's schema (to the non-null branch of an optional)."""

    def apply(schema: dict[str, Any]) -> None:
        target = next((b for b in schema.get("anyOf", []) if b.get("type") != "null"), schema)
        for key, value in rule.items():
            if key == "description":
                schema["description"] = value
            elif key == "each":
                for item in target["prefixItems"]:
                    item.update(value)
            elif key == "items":
                target["items"].update(value)
            else:
                target[key] = value

    return apply


def _field(config_cls: type, name: str, annotation: Any, default: Any) -> tuple[Any, Any]:
    if name == "device":
        annotation = DEVICE
    rule = RANGES[config_cls].get(name)
    return annotation, Field(default, json_schema_extra=schema_rule(rule) if rule else None)


def request_model(config_cls: type, name: str) -> type[BaseModel]:
    """A pydantic model with the dataclass's fields, types and defaults (and ``RANGES`` in its schema);
    unknown keys refused."""
    hints = typing.get_type_hints(config_cls)
    fields: dict[str, Any] = {
        f.name: _field(config_cls, f.name, _strict(hints[f.name]), f.default) for f in dataclasses.fields(config_cls)
    }
    doc = (config_cls.__doc__ or "").strip()
    return create_model(  # type: ignore[call-overload, no-any-return]
        name, __config__=ConfigDict(extra="forbid"), __doc__=doc, **fields
    )


SearchConfigIn = request_model(SearchConfig, "SearchConfigIn")
RetrainConfigIn = request_model(RetrainConfig, "RetrainConfigIn")


def search_config(data: BaseModel) -> SearchConfig:
    """Range-check a typed request config (``ConfigError`` names each bad field)."""
    return SearchConfig.from_dict(data.model_dump())


def retrain_config(data: BaseModel) -> RetrainConfig:
    return RetrainConfig.from_dict(data.model_dump())
