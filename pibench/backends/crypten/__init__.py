"""The CrypTen backend: CrypTen 0.4.1's two-party arithmetic and binary secret sharing over
torch.distributed/gloo, one process per party (and one for the TTP provider's dealer).

This module is light (settings and descriptions); `session` imports torch and CrypTen.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pibench.backends.base import Backend, Emit, Rendezvous, Session
from pibench.backends.crypten import log_reduction
from pibench.backends.crypten.settings import CrypTenSettings, weight_masks
from pibench.models.opkinds import Call, CostForm, Sample
from pibench.util.errors import PibenchError

DATA = Path(__file__).resolve().parents[2] / "data"


class CrypTen(Backend):
    name = "crypten"
    label = "CrypTen"
    package = "crypten"
    protocol = "CrypTen 2PC: arithmetic and binary secret sharing, Beaver triples, semi-honest"
    settings_type = CrypTenSettings

    def ranks(self, settings: CrypTenSettings) -> dict[int, str]:
        return {0: "server", 1: "client", **({2: "TTP"} if settings.provider == "TTP" else {})}

    def check(self, settings: CrypTenSettings, *, emulated: bool) -> None:
        if emulated and settings.provider == "TTP":
            raise PibenchError("--emulate runs two parties; the TTP provider is not supported with it")
        if settings.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise PibenchError("crypten.device cuda: this machine has no GPU that torch can use")

    def weight_masks(self, settings: Mapping[str, Any]) -> str:
        return weight_masks(settings)

    def cost_form(self, call: Call) -> CostForm:
        """Softmax and argmax follow CrypTen's log-reduction maximum (`log_reduction`); the rest, the kinds' forms."""
        return log_reduction.FORMS.get(call.name, call.form)

    def count_samples(self, call: Call) -> tuple[Sample, ...]:
        return log_reduction.count_samples(call.name)

    def reference_gelu(self, settings: CrypTenSettings) -> str:
        return settings.gelu

    def describe(self, settings: Mapping[str, Any], version: str | None) -> str:
        f = settings["functions"]
        softmax = {"max_only": "max-only softmax", "crypten": "CrypTen's softmax"}[settings["softmax"]]
        where = "GPU" if settings["device"] == "cuda" else f"CPU, {settings['local_products']} local products"
        return (
            f"{self.named(version)} 2PC ({settings['provider']} triples, {settings['precision_bits']} fraction bits, "
            f"{settings['gelu']}-GELU, {softmax}, exp {f['exp_iterations']} it., reciprocal {f['reciprocal_method']}; "
            f"{where})"
        )

    def load(self) -> None:
        from pibench.backends.crypten.compat import import_crypten

        import_crypten()

    def session(
        self,
        rank: int,
        rendezvous: Rendezvous,
        settings: CrypTenSettings,
        timeout_s: float,
        on_op: Any = None,
        seed: int = 0,
    ) -> Session:
        from pibench.backends.crypten.session import CrypTenSession

        return CrypTenSession(rank, rendezvous, settings, timeout_s, on_op, seed)

    def serve_dealer(
        self, rank: int, rendezvous: Rendezvous, settings: CrypTenSettings, timeout_s: float, emit: Emit
    ) -> None:
        from pibench.backends.crypten.session import serve_dealer

        serve_dealer(rank, rendezvous, settings, timeout_s, emit)

    @property
    def shipped_calibration(self) -> Path:
        return DATA / "calibration-crypten-default.json"


BACKEND = CrypTen()
