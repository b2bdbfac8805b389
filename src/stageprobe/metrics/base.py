"""A metric value that may be unavailable, with the reason, so no substitute ever takes its name."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricValue:
    """`value` is None exactly when the metric could not be computed; `reason` then says why."""

    name: str
    value: float | None
    reason: str | None = None

    def __post_init__(self) -> None:
        if (self.value is None) == (self.reason is None):
            raise ValueError("a MetricValue has either a value or a reason it is unavailable, not both")

    @classmethod
    def unavailable(cls, name: str, reason: str) -> MetricValue:
        return cls(name, None, reason)

    @property
    def available(self) -> bool:
        return self.value is not None

    def __str__(self) -> str:
        return f"{self.value:.4g}" if self.value is not None else f"unavailable ({self.reason})"
