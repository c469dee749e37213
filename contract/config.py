"""Loading typed configuration (topologies, experiments, service configs) from YAML or JSON.

Every file the project reads is validated with pydantic on load; an error names the file and the field,
e.g. ``topologies/globe.yaml: links[3].delay_ms: Input should be greater than or equal to 0``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration file is missing, unreadable or invalid; the message names the file and field."""


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def format_validation_error(source: str, err: ValidationError) -> str:
    """One line per problem: ``source: field.path: message``."""
    lines = []
    for e in err.errors():
        lines.append(f"{source}: {_field_path(tuple(e['loc']))}: {e['msg']}")
    return "\n".join(lines)


def read_data(path: str | Path) -> Any:
    """Parse a YAML (or JSON, a subset) file; raise ConfigError naming the file on failure."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror or e}") from None
    try:
        if p.suffix == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise ConfigError(f"{p}: not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {e}") from None


def validate(model: type[M], data: Any, source: str) -> M:
    """Validate already-parsed data against ``model``; ConfigError names ``source`` and the field."""
    if data is None:
        raise ConfigError(f"{source}: (top level): file is empty")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(source, e)) from None


def load_model(model: type[M], path: str | Path) -> M:
    """Read ``path`` (YAML or JSON) and validate it as ``model``."""
    return validate(model, read_data(path), str(path))
