"""Shared checks for the JSON specs a policy file carries (observation spec, action spec)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def check_spec_document(
    data: Any, what: str, expected_keys: Iterable[str], schema_version: int, error: type[Exception]
) -> Mapping[str, Any]:
    """``data`` as a mapping with exactly ``expected_keys`` and ``schema_version``; else ``error`` naming why."""
    if not isinstance(data, Mapping):
        raise error(f"{what} must be a JSON object, got {type(data).__name__}")
    expected = set(expected_keys)
    missing, unknown = sorted(expected - set(data)), sorted(set(data) - expected)
    if missing or unknown:
        raise error(f"{what}: missing keys {missing}, unknown keys {unknown} — expected {sorted(expected)}")
    if data["schema_version"] != schema_version:
        raise error(
            f"{what} schema_version {data['schema_version']!r} is not supported — this handrail reads "
            f"version {schema_version}; re-export the policy with a matching handrail"
        )
    return data
