"""What is wrong with a policy set, in the one format every front end prints.

Errors are values, not exceptions, because a policy set is checked as a whole: the loader collects
every problem of every file before deciding, and `rayops policy check`, the controller's
"policy invalid" event and the bot all show the same lines. `PolicySetInvalid` is the one exception,
raised only by `load_policy_set`, and it carries the whole list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, order=True)
class PolicyError:
    """One problem at one place: `path:line: field.path: what is wrong (got X; expected Y)`.

    `field` is the camelCase path as written in YAML (`spec.behavior.scaleDown.policies[0].value`);
    for problems that belong to no field it names the layer instead (`yaml`, `document`, `file`,
    `directory`). `line` is 1-based; 0 when the problem has no line (a missing directory).
    Warnings never refuse a set; they are printed with `warning:` before the message.
    """

    path: str
    line: int
    field: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        tag = "warning: " if self.severity == "warning" else ""
        return f"{self.path}:{self.line}: {self.field}: {tag}{self.message}"


class PolicySetInvalid(Exception):
    """The directory holds at least one error, so none of it may take effect."""

    def __init__(self, errors: Sequence[PolicyError]) -> None:
        self.errors: tuple[PolicyError, ...] = tuple(errors)
        n = len(self.errors)
        first = f": {self.errors[0]}" if self.errors else ""
        more = f" (and {n - 1} more)" if n > 1 else ""
        super().__init__(f"policy set refused, {n} error{'s' if n != 1 else ''}{first}{more}")


def describe_value(value: object) -> str:
    """A short rendering of a YAML value for `got ...`: scalars as written, collections by kind."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return repr(shown)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"
