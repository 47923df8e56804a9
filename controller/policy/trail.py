"""The ordered list of reasons one decision gathers while it is computed.

Each step of `decide` appends what it did (a signal's proposal, a clamp with its before and after),
so the order of the reasons is the order of the computation: "why" reads top to bottom.
"""

from __future__ import annotations

from controller.domain import JSONScalar, Reason, ReasonCode


class Trail:
    def __init__(self) -> None:
        self.reasons: list[Reason] = []

    def add(self, code: ReasonCode, message: str, /, **data: JSONScalar) -> None:
        self.reasons.append(Reason(code, message, data))

    def extend(self, reasons: tuple[Reason, ...]) -> None:
        self.reasons.extend(reasons)
