"""Turning cattrs' validation exception groups into `{field: message}` for error bodies.

Constrained values are NewTypes whose structure hooks raise FieldError, so every failing
field is reported at once, each with a message a person can act on.
"""

from __future__ import annotations

from cattrs import ClassValidationError, ForbiddenExtraKeysError
from cattrs.errors import AttributeValidationNote


class FieldError(ValueError):
    """A value of the right type that breaks a rule; str() is the message for the client."""


def field_errors(error: ClassValidationError) -> dict[str, str]:
    fields: dict[str, str] = {}
    for exc in error.exceptions:
        if isinstance(exc, ForbiddenExtraKeysError):
            for name in sorted(exc.extra_fields):
                fields[name] = "unknown field"
            continue
        notes = getattr(exc, "__notes__", [])
        name = next((n.name for n in notes if isinstance(n, AttributeValidationNote)), "")
        fields[name] = _describe(exc, notes)
    return fields


def _describe(exc: BaseException, notes: list[object]) -> str:
    if isinstance(exc, KeyError):
        return "is required"
    if isinstance(exc, FieldError):
        return str(exc)
    wanted = next((n.type for n in notes if isinstance(n, AttributeValidationNote)), None)
    name = getattr(wanted, "__name__", None) or "value"
    return f"must be a valid {name.lower()}"
