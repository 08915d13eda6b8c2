"""Interpreters of the one model definition (`pibench.model.forward`), each an implementation of `Ops`:
symbolic.py (shapes only, tallies costs), plaintext.py (torch, autograd). The CrypTen interpreter
lives in `pibench.backends.crypten`; none of them is imported by the analytic path except the symbolic one."""

from pibench.interp.base import Ops

__all__ = ["Ops"]
