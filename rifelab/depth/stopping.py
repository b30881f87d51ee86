"""Early-stopping rules for the co-alignment optimisation (and replaying them on a recorded loss curve)."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any, Mapping, Sequence

log = logging.getLogger(__name__)


class StoppingRule(ABC):
    """Decides after each optimiser step, from the loss of that step, whether to stop."""

    name: str = "rule"

    @abstractmethod
    def reset(self) -> None:
        """Forget all losses seen (called at the start of every run)."""

    @abstractmethod
    def update(self, loss: float) -> bool:
        """Record the loss of the next iteration; True means stop after this iteration."""

    def describe(self) -> str:
        return self.name


class NoStopping(StoppingRule):
    """Run all iterations (the reference)."""

    name = "none"

    def reset(self) -> None:
        pass

    def update(self, loss: float) -> bool:
        return False


class _DeltaRule(StoppingRule):
    def __init__(self, tol: float, patience: int) -> None:
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol}")
        if int(patience) < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.tol, self.patience = float(tol), int(patience)
        self.reset()

    def reset(self) -> None:
        self._prev: float | None = None
        self._streak = 0

    def _small(self, loss: float, prev: float) -> bool:
        raise NotImplementedError

    def update(self, loss: float) -> bool:
        prev, self._prev = self._prev, float(loss)
        if prev is None:
            return False
        self._streak = self._streak + 1 if self._small(float(loss), prev) else 0
        return self._streak >= self.patience


class LossPlateau(_DeltaRule):
    """Stop when ``|loss_i - loss_{i-1}| < tol`` for ``patience`` consecutive iterations (report 004)."""

    name = "plateau"

    def _small(self, loss: float, prev: float) -> bool:
        return abs(loss - prev) < self.tol

    def describe(self) -> str:
        return f"plateau(tol={self.tol:g}, patience={self.patience})"


class RelativeTolerance(_DeltaRule):
    """Stop when ``|loss_i - loss_{i-1}| < tol * |loss_{i-1}|`` for ``patience`` consecutive iterations."""

    name = "relative"

    def _small(self, loss: float, prev: float) -> bool:
        return abs(loss - prev) < self.tol * abs(prev)

    def describe(self) -> str:
        return f"relative(rtol={self.tol:g}, patience={self.patience})"


def stopping_rule(spec: StoppingRule | str | Mapping[str, Any] | None) -> StoppingRule:
    """Build a rule from ``None``/``'none'``, ``{'rule': 'plateau'|'relative', 'tol': x, 'patience': n}``."""
    if isinstance(spec, StoppingRule):
        return spec
    if spec is None or (isinstance(spec, str) and spec.lower() == "none"):
        return NoStopping()
    if isinstance(spec, Mapping):
        opts = dict(spec)
        kind = str(opts.pop("rule", "plateau")).lower()
        tol = opts.pop("tol", opts.pop("rtol", 1e-4))
        patience = opts.pop("patience", 30)
        if opts:
            raise ValueError(f"unknown stopping-rule keys {sorted(opts)}; expected rule, tol, patience")
        if kind == "none":
            return NoStopping()
        if kind == "plateau":
            return LossPlateau(float(tol), int(patience))
        if kind == "relative":
            return RelativeTolerance(float(tol), int(patience))
        raise ValueError(f"unknown stopping rule {kind!r}; expected none, plateau or relative")
    raise TypeError(f"cannot build a stopping rule from {spec!r}")


def replay_stopping(rule: StoppingRule | str | Mapping[str, Any] | None, losses: Sequence[float]) -> int | None:
    """Steps after which ``rule`` would stop on a recorded loss history (None: never).

    Adam runs are deterministic, so this equals the stop point of a live run on the same input.
    """
    r = stopping_rule(rule)
    r.reset()
    for j, v in enumerate(losses, start=1):
        if r.update(float(v)):
            return j
    return None
