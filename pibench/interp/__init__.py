"""Interpreters of the one model definition (`pibench.model.forward`).

Each implements `Ops`; the model never touches torch or CrypTen directly. Backends are looked up by
name in `INTERPRETERS`, imported lazily so that the analytic path imports neither torch nor CrypTen.
"""

from pibench.interp.base import Ops
from pibench.registry import Registry

INTERPRETERS: Registry[type[Ops]] = Registry("interpreter")
INTERPRETERS.add("symbolic", "pibench.interp.symbolic:SymbolicOps")
INTERPRETERS.add("plaintext", "pibench.interp.plaintext:TorchOps")

__all__ = ["INTERPRETERS", "Ops"]
