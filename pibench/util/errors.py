"""User-facing errors: one line, no traceback, a non-zero exit code (see `pibench.cli`)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class PibenchError(Exception):
    """An error caused by the user's input; the CLI prints `str(err)` on one line and exits 2."""

    exit_code = 2


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `choices` other than `name` itself, or '' when none is close."""
    close = difflib.get_close_matches(name, [c for c in choices if c != name], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def shorten(value: object, limit: int = 60) -> str:
    """`repr(value)`, cut to `limit` characters: error messages never echo a huge input."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validated(model: type[M], data: object, what: str) -> M:
    """`model.model_validate(data)`, or a one-line `PibenchError` "`what`: field.path: why" naming the first
    field at fault (`what` says whose data it is and what it should have been)."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        why = first["msg"].removeprefix("Value error, ")
        raise PibenchError(f"{what}: {where + ': ' if where else ''}{why}") from None
