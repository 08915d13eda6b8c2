"""Progress bars whose estimate of what is left holds from the start.

The first step of a run carries its start-up (processes starting, imports, compilation, a warm-up
pass): a rate measured from it once made a 25 s training job's bar say 9 minutes. `Progress` keeps
the elapsed time from the start but takes its rate, and so its estimate, from the steps after the
first; until the second step ends it shows "?" for what is left.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm import tqdm


class _SteadyBar(tqdm):
    """tqdm whose rate is the mean over the steps after the first (`steady_from`: count and time then)."""

    steady_from: tuple[float, float] | None = None

    @property
    def format_dict(self) -> dict[str, Any]:
        d = super().format_dict
        rate = None
        if self.steady_from is not None:
            n0, t0 = self.steady_from
            elapsed = time.monotonic() - t0
            rate = (d["n"] - n0) / elapsed if d["n"] > n0 and elapsed > 0 else None
        d["rate"] = rate
        if rate is None:
            d["initial"] = d["n"]  # tqdm's own fallback, n / elapsed, would count the start-up in
        return d


class Progress:
    """A bar on stderr counting `total` steps (None: not yet known); `advance(n)` says n more are done."""

    def __init__(self, total: int | None, unit: str, show: bool, **kwargs: Any) -> None:
        self.bar = _SteadyBar(total=total, unit=unit, disable=not show, file=sys.stderr, dynamic_ncols=True, **kwargs)
        self._n = 0  # steps done (a disabled tqdm counts nothing)

    def advance(self, n: int = 1, total: int | None = None) -> None:
        if total is not None:
            self.bar.total = total
        if n <= 0:
            return
        self._n += n
        if self.bar.steady_from is None:  # the end of the first step: the steady clock starts
            self.bar.steady_from = (self.bar.n + n, time.monotonic())
        self.bar.update(n)

    def note(self, text: str) -> None:
        """What the bar is on (a variant's name), after the counts."""
        self.bar.set_postfix_str(text)

    def estimate(self) -> str:
        """The bar's line as shown (for tests)."""
        return str(self.bar)

    @property
    def n(self) -> int:
        return self._n

    def close(self) -> None:
        self.bar.close()
