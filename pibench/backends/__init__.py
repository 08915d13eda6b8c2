"""The 2PC backends pibench runs the one model definition under, by name (`base.Backend`).

To add one: a package `pibench/backends/NAME/` with a light `__init__.py` defining a `Backend`
(settings schema, ranks, description, `session`), its heavy parts imported only by `session`, and
one line below. Suites get a `NAME:` section and `backend: NAME`; records, reports, the gate and
calibration follow from the interface.
"""

from __future__ import annotations

from pibench.backends.base import Backend
from pibench.backends.crypten import BACKEND as CRYPTEN
from pibench.backends.spu import BACKEND as SPU
from pibench.models.registry import Registry

BACKENDS: Registry[Backend] = Registry("backend")
BACKENDS.add(CRYPTEN.name, CRYPTEN)
BACKENDS.add(SPU.name, SPU)
DEFAULT_BACKEND = CRYPTEN.name
