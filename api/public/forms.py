"""Reading HTML form posts and turning validation failures into GOV.UK-style field errors.

Why a module: every public form has the same needs: plain ``application/x-www-form-urlencoded``
posts (no JavaScript), values trimmed, repeated fields (checkboxes) as lists, and each error
keyed by the id of the field it is about, so the error summary can link straight to it and the
field can show the message beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

from aiohttp import web
from multidict import MultiDictProxy
from pydantic import ValidationError

Form: TypeAlias = MultiDictProxy[str | bytes | bytearray | web.FileField]
#: field id -> message, in the order the fields appear on the page.
Errors = dict[str, str]


async def read_form(request: web.Request) -> Form:
    return await request.post()


def text(form: Form, name: str, max_chars: int = 10_000) -> str:
    """A text field, trimmed; anything that is not text (a file) counts as empty."""
    value = form.get(name)
    if not isinstance(value, str):
        return ""
    return value.strip()[:max_chars]


def many(form: Form, name: str) -> list[str]:
    """Every value of a repeated field (checkboxes), trimmed, empty ones dropped, no repeats."""
    seen: list[str] = []
    for value in form.getall(name, []):
        if isinstance(value, str) and value.strip() and value.strip() not in seen:
            seen.append(value.strip())
    return seen


def optional(value: str) -> str | None:
    return value or None


def field_errors(
    exc: ValidationError, message_for: Callable[[str, str, str], str]
) -> dict[str, str]:
    """One message per field from a pydantic error: ``message_for(field, error_type, msg)``.

    Messages never quote the submitted value; the field is the first element of the location.
    """
    errors: dict[str, str] = {}
    for err in exc.errors():
        loc = err.get("loc") or ("",)
        field = str(loc[0])
        if field in errors:
            continue
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        errors[field] = message_for(field, str(err.get("type", "")), msg)
    return errors


def ordered(errors: dict[str, str], order: Iterable[str]) -> Errors:
    """Errors in page order (the error summary lists them as the fields come)."""
    order = list(order)
    rank = {name: i for i, name in enumerate(order)}
    return dict(sorted(errors.items(), key=lambda kv: rank.get(kv[0], len(order))))


def values_of(form: Form, names: Iterable[str]) -> dict[str, Any]:
    return {name: text(form, name) for name in names}
