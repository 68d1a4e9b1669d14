"""The one error type for problems a user can fix (bad recipe, missing data, unknown model)."""

from __future__ import annotations

import difflib


class ZooError(ValueError):
    """A problem the user can fix; the CLI prints its message and exits with status 2."""


def suggest(name: str, choices, *, what: str, hint: str = "") -> ZooError:
    """Builds the error for an unknown `name`, naming close matches among `choices`."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    message = f"unknown {what} {name!r}"
    if close:
        message += f"; did you mean {', '.join(repr(c) for c in close)}?"
    else:
        shown = ", ".join(choices[:20]) + (", ..." if len(choices) > 20 else "")
        message += f"; available: {shown}"
    if hint:
        message += f" ({hint})"
    return ZooError(message)


def check_counts(**values) -> None:
    """Raises for the first of `values` (name=value) that is not a positive whole number."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ZooError(f"{name} must be a positive whole number, received {value!r}")
