"""Importing CrypTen 0.4.1 on torch 2.x.

CrypTen's ONNX converter imports `torch.onnx._internal.registration`, which torch 2.x no longer has.
pibench never uses CrypTen's ONNX conversion (`crypten.nn.from_pytorch`), so a stand-in module is
registered before the import; everything else in CrypTen works unchanged.
"""

from __future__ import annotations

import importlib
import sys
import types

_MISSING = "torch.onnx._internal.registration"


def import_crypten() -> types.ModuleType:
    """`import crypten`, with the stand-in registered where torch lacks the module."""
    if "crypten" in sys.modules:
        return sys.modules["crypten"]
    try:
        importlib.import_module(_MISSING)
    except ImportError:
        stub = types.ModuleType(_MISSING)
        stub.registry = None  # type: ignore[attr-defined]  # read only by crypten.nn.from_pytorch, unused here
        sys.modules[_MISSING] = stub
    return importlib.import_module("crypten")
