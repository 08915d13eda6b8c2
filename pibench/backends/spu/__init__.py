"""The SPU backend: SecretFlow SPU's two-party protocol (CHEETAH by default, the base of BumbleBee),
the papers' own, one process per party over SPU's own link layer.

This module is light (settings and descriptions); `session` imports jax and SPU.
"""

from __future__ import annotations

import importlib.util
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from pibench.backends.base import Backend, Rendezvous, Session, url_of
from pibench.backends.spu import ciphertexts
from pibench.backends.spu.settings import SPUSettings
from pibench.models.config import ModelConfig
from pibench.models.opkinds import Call, CostForm, Sample
from pibench.util.errors import PibenchError
from pibench.util.procs import free_port, free_ports


class SPU(Backend):
    name = "spu"
    label = "SPU"
    package = "spu"
    protocol = "SecretFlow SPU 2PC (CHEETAH: HE-based linear algebra, OT-based nonlinear), semi-honest"
    settings_type = SPUSettings
    # CHEETAH's OT and HE engines refill buffers as they go, so identical runs differ: measured here,
    # bytes by up to ~3% (ReLU) and recv actions by up to 2x between repeats of one operation
    count_tolerance: ClassVar[dict[str, float]] = {
        **{"bytes": 0.05, "bytes.*": 0.10, "comm_savings": 0.05},
        **{"rounds": 1.0, "rounds.*": 1.0},
    }

    # the first operations of a session set up OT and HE keys (a 128x768 by 768x768 product: 30 MB the
    # first time, 10.85 MB after); a GPT-2 layer takes minutes on 2 cores
    warm_up = "session"
    repeats = 1
    rounds_are_round_trips = False  # its messages, sent by both parties at once
    # both parties send each message at once, so one waits a one-way delay (RTT/2) at least; timed across
    # emulated links a message waited 0.51-0.61 RTT at 10-80 ms: 0.55 puts all 32 cases within 15%
    # (0.90-1.05, docs/networks.md)
    rtt_per_round = 0.55

    def party_memory(self, cfg: ModelConfig, weights: int) -> int:
        """CHEETAH's HE products hold the server's encoded weight matrices, so the largest one drives a
        party's peak: measured here, 10.7 GiB for GPT-2's SM + LN + G (768 x 3072) and 10.1 GiB with
        768 x 2304 at most, 2.5 GiB at d=192 whatever T; so about 2 GiB + 3.7 KiB per element. End to
        end, the token embedding (vocab x d) is one of them: GPT-2's 50257 x 768 took two parties past
        this machine's 24 GiB within seconds (2026-12-04), as the estimate says it would."""
        largest = cfg.d * (cfg.d_ff if cfg.ffn != "scaled_fused" else 3 * cfg.d)
        if cfg.scope == "end_to_end":
            largest = max(largest, cfg.vocab * cfg.d)
        return 2 * 2**30 + 3790 * largest

    def local_rendezvous(self, ranks: int) -> tuple[str, socket.socket | None]:
        """SPU's brpc link binds each party's own address itself: one free loopback port per party."""
        return ",".join(f"tcp://127.0.0.1:{port}" for port in free_ports(ranks)), None

    def announce(self, rank: int, host: str, given: tuple[str, int] | None) -> tuple[str | None, socket.socket | None]:
        """Every SPU party listens (brpc binds it): at the address the rendezvous lists for it, else on a
        port free now on `host`."""
        host, port = given or (host, free_port(host))
        return url_of(host, port), None

    def transport(self, announced: list[str | None], listener: socket.socket | None) -> Rendezvous:
        return Rendezvous(",".join(a for a in announced if a))

    def ranks(self, settings: SPUSettings) -> dict[int, str]:
        return {0: "server", 1: "client"}

    def check(self, settings: SPUSettings, *, emulated: bool) -> None:
        if importlib.util.find_spec("spu") is None:
            raise PibenchError(
                "backend spu needs the `spu` package (0.9.5: CPython 3.11 on x86-64 Linux only); it is not installed"
            )

    def reference_gelu(self, settings: SPUSettings) -> str:
        return settings.gelu

    def describe(self, settings: Mapping[str, Any], version: str | None) -> str:
        s = settings
        softmax = "broadcast denominator" if s["optimize_denominator_with_broadcast"] else "per-element denominator"
        iters = "SPU's" if s["div_goldschmidt_iters"] == 0 else str(s["div_goldschmidt_iters"])
        return (
            f"{self.named(version)} 2PC ({s['protocol']}, {s['field']}, {s['fxp_fraction_bits']} fraction bits, "
            f"{s['gelu']}-GELU, exp {s['exp_mode']}, log {s['log_mode']}, reciprocal {iters} Goldschmidt it., "
            f"softmax {softmax}, weights {s['weights']}; op by op, each operation its own program, which moves "
            "what one program per pass moves within SPU's run-to-run spread: docs/spu.md)"
        )

    def load(self) -> None:
        self.check(self.default_settings(), emulated=False)
        import pibench.backends.spu.session  # noqa: F401 - jax and SPU

    def session(
        self,
        rank: int,
        rendezvous: Rendezvous,
        settings: SPUSettings,
        timeout_s: float,
        on_op: Callable[[], None] | None = None,
        seed: int = 0,
    ) -> Session:
        self.check(settings, emulated=False)
        from pibench.backends.spu.session import SPUSession

        return SPUSession(rank, rendezvous, settings, timeout_s, on_op)

    @property
    def shipped_calibration(self) -> Path:
        return Path(__file__).resolve().parents[2] / "data" / "calibration-spu-default.json"

    def time_samples(self, call: Call) -> tuple[Sample, ...]:
        """The shapes its counts are calibrated on: their runs give its seconds too."""
        return SAMPLES[call.name]

    def cost_form(self, call: Call) -> CostForm:
        """Products follow CHEETAH's ciphertexts (`ciphertexts`); the rest, the kinds' forms."""
        return ciphertexts.FORMS.get(call.name, call.form)

    def count_samples(self, call: Call) -> tuple[Sample, ...]:
        """From one row to a GPT-2 layer's shapes: SPU's traffic comes in lumps (its OT buffers refill a
        few megabytes at a time, so a call of one element can move 9 MB), so it is interpolated between
        measured sizes (`count_model`), and these span what the shipped suites run, the tiny ones' and
        GPT-2's (T = 1 to 128, d = 64 and 768, decode steps' one row)."""
        return SAMPLES[call.name]


SAMPLES: dict[str, tuple[Sample, ...]] = {
    "softmax": (
        ((1, 1),),
        ((1, 8),),
        ((4, 8, 8),),
        ((12, 1, 33),),
        ((1, 1024),),
        ((12, 1, 129),),
        ((12, 32, 32),),
        ((12, 64, 64),),
        ((12, 128, 128),),
    ),
    "layernorm": (((1, 64),), ((8, 64),), ((1, 768),), ((8, 768),), ((32, 768),), ((16, 3072),), ((128, 768),)),
    "gelu": (((1, 64),), ((1, 256),), ((8, 256),), ((1, 3072),), ((8, 768),), ((32, 3072),), ((128, 3072),)),
    "relu": (((1, 64),), ((8, 256),), ((1, 3072),), ((32, 3072),), ((128, 3072),)),
    "linear": (
        ((1, 64), (64, 192)),
        ((8, 64), (64, 192)),
        ((8, 64), (64, 256)),
        ((1, 768), (768, 2304)),
        ((32, 768), (768, 768)),
        ((32, 768), (768, 3072)),
        ((128, 768), (768, 768)),
        ((128, 768), (768, 3072)),
        # a vocabulary's: the tiny suites' (97) and gpt2_gen_small's (2048) embedding and head
        ((8, 97), (97, 64)),
        ((1, 64), (64, 97)),
        ((32, 2048), (2048, 768)),
        ((1, 768), (768, 2048)),
        # a row into a narrower output, whose answers CHEETAH packs by coefficients (`ciphertexts.ciphertexts`)
        ((1, 256), (256, 64)),
        ((1, 3072), (3072, 768)),
    ),
    "attn_matmul": (
        ((4, 8, 16), (4, 16, 8)),
        ((4, 8, 8), (4, 8, 16)),
        ((12, 1, 64), (12, 64, 33)),
        ((12, 1, 33), (12, 33, 64)),
        ((12, 32, 64), (12, 64, 32)),
        ((12, 128, 64), (12, 64, 128)),
        ((12, 128, 128), (12, 128, 64)),
        # a decode step's scores times values at longer contexts: two unpacked answers, and packed by coefficients
        ((12, 1, 159), (12, 159, 64)),
        ((12, 1, 256), (12, 256, 64)),
    ),
    "mul": (
        ((1, 64), (1,)),
        ((4, 8, 8), (4, 8, 1)),
        ((8, 64), (64,)),
        ((1, 768), (768,)),
        ((32, 768), (768,)),
        ((128, 768), (1,)),
        ((12, 128, 128), (12, 128, 1)),
    ),
    "scale": (((1, 64),), ((4, 8, 8),), ((12, 1, 33),), ((8, 256),), ((12, 32, 32),), ((12, 128, 128),)),
    "argmax": (((1, 97),), ((1, 1024),), ((1, 2048),), ((1, 8192),), ((1, 50257),)),
}


BACKEND = SPU()
