"""Typed readers for the environment variables that configure meshadmin.

Every reader records the variable it reads in `REGISTRY` (name -> one-line description), so a
test can check that each one is documented in `docker/.env.example`. A value that cannot be
parsed raises ImproperlyConfigured naming the variable: the server refuses to start rather than
guess (``SHADOWMESH_DEBUG=yes`` is an error, not "probably true").
"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

__all__ = ["REGISTRY", "env_bool", "env_int", "env_list", "env_path", "env_str"]

REGISTRY: dict[str, str] = {}

_TRUE = {"1", "true", "on"}
_FALSE = {"0", "false", "off"}


def _raw(name: str, help_text: str) -> str | None:
    REGISTRY[name] = help_text
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def env_str(name: str, default: str | None, help_text: str) -> str | None:
    value = _raw(name, help_text)
    return default if value is None else value


def env_bool(name: str, default: bool, help_text: str) -> bool:
    value = _raw(name, help_text)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be one of 1/0/true/false/on/off, not {value!r}")


def env_int(name: str, default: int, help_text: str, *, minimum: int = 0) -> int:
    value = _raw(name, help_text)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}") from exc
    if number < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, not {number}")
    return number


def env_list(name: str, default: list[str], help_text: str) -> list[str]:
    value = _raw(name, help_text)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_path(name: str, default: Path, help_text: str) -> Path:
    value = _raw(name, help_text)
    return Path(value).expanduser().resolve() if value is not None else default
