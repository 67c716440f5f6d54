"""Run configs at the API boundary: typed request models derived from ``nas_core.config``.

The request models (``SearchConfigIn``, ``RetrainConfigIn``) are generated from the
frozen dataclasses, so a field added to the core appears in the API and its OpenAPI
schema without being listed twice. They check types (strictly: ``true`` is not an
epoch count) and refuse unknown keys; the core's ``from_dict`` then checks ranges and
relations (K divides channels...) and raises ``ConfigError`` -> 422 per field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Annotated, Any, Union

from pydantic import (
    AllowInfNan,
    BaseModel,
    ConfigDict,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    create_model,
)

from nas_core.config import RetrainConfig, SearchConfig

# Floats must be finite: JSON bodies may carry NaN/Infinity, which no range check refuses for every
# field (`grad_clip > 0` holds for Infinity) and which PostgreSQL's JSONB cannot store.
FiniteFloat = Annotated[StrictFloat, AllowInfNan(False)]
_STRICT: dict[Any, Any] = {int: StrictInt, float: FiniteFloat, bool: StrictBool, str: StrictStr}


def _strict(annotation: Any) -> Any:
    """The same type with scalars made strict and floats finite (tuples and optionals keep their shape)."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = tuple(_strict(a) for a in typing.get_args(annotation))
        return Union[args]  # noqa: UP007 (built from a runtime tuple)
    if origin is tuple:
        return tuple[tuple(_strict(a) for a in typing.get_args(annotation))]  # type: ignore[misc]
    return _STRICT.get(annotation, annotation)


def request_model(config_cls: type, name: str) -> type[BaseModel]:
    """A pydantic model with the dataclass's fields, types and defaults; unknown keys refused."""
    hints = typing.get_type_hints(config_cls)
    fields: dict[str, Any] = {
        f.name: (_strict(hints[f.name]), f.default) for f in dataclasses.fields(config_cls)
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
