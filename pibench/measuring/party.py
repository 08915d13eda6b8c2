"""One party's walk over a suite under any backend: sharing, layer sampling, timing, accuracy.

For each variant the parties secret-share weights (server, rank 0) and input (client, rank 1), run
the input stage and a sample of layers (one per layer kind, `pibench.counting.sampling`; every layer with
`full`) through the backend's `Session`, and extrapolate: bytes and rounds exactly (layers of a
kind cost the same), seconds proportionally. One unmeasured warm-up pass of the first layer comes
first, so timing is that of steady state; then the steps are timed `repeats` times, the passes
interleaved (`_timed_walk`), and each step's seconds are its median pass's. The output is compared
with the plaintext interpreter on the same layers; an error beyond `USABLE_RELATIVE_ERROR` of the
output's scale marks the variant unusable. Progress goes to `emit` as events.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, cast

import psutil
import torch

from pibench.backends.base import SPREAD, Backend, Counts, Emit, Rendezvous, Session, StepCounts
from pibench.measuring.accuracy import measure_accuracy
from pibench.measuring.measured import (
    USABLE_RELATIVE_ERROR,
    DealerTotals,
    Generation,
    KindTotals,
    Measured,
    PartyCounts,
    PartyRecord,
    PartyResult,
    StepRecord,
    TokenCounts,
    Tokens,
    TokenStep,
)
from pibench.measuring.peers import STARTUP_GRACE_S, Peers, check_listen_host
from pibench.measuring.plan import HEAD_STAGES, Stage, head_sample, sample_of, stages
from pibench.models.checkpoints import load_weights
from pibench.models.config import ModelConfig
from pibench.models.definition import (
    KVCache,
    embed,
    head_param_specs,
    input_param_specs,
    input_stage,
    layer,
    layer_param_specs,
    layer_weight_specs,
    logits,
    multiplied,
    step,
)
from pibench.models.opkinds import KINDS
from pibench.models.plaintext import TorchModel, TorchOps
from pibench.suites.loader import Suite, SuiteEntry
from pibench.util.errors import PibenchError, validated
from pibench.util.procs import listening_socket


@dataclass(frozen=True)
class PartyOptions:
    rank: int
    rendezvous: Rendezvous  # pibench's channel: rank 0's address (and, listed, the others' transport addresses)
    suite: Suite
    secret: bytes = b""  # the run's shared secret (`pibench.measuring.peers`)
    full: bool = False  # measure every layer instead of one per kind
    timeout_s: float = 45.0  # longest silence of another party, and longest wait in any exchange
    allow_wildcard: bool = False  # rank 0 may listen on every interface (0.0.0.0, ::)
    gelu: str = "tanh"  # the GELU form the backend computes (`Backend.reference_gelu`)
    exact: bool = True  # the backend's counts are deterministic (`Backend.count_tolerance` empty)
    repeats: int = 3  # runs of each step (the suite's `repeats`, else `Backend.repeats`)
    warm_up: bool = True  # an unmeasured pass before this variant (`Backend.warm_up`)


class _PeakRSS:
    """Samples this process's resident memory every 20 ms; `.peak` in bytes."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._proc = psutil.Process()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(0.02)

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def synthetic_weights(entry: SuiteEntry, seed: int, layers: list[int]) -> dict[str, torch.Tensor]:
    """The server's weights of the input stage and `layers` (end to end, and of the head): a random
    model of the variant (folded reparametrisations). End to end, the token and position embeddings
    are scaled so that an embedded token is unit-variance, as the layers scope's synthetic input is:
    at GPT-2's initial 0.02 LayerNorm would see variances far below the range CrypTen's inverse
    square root approximates, an artefact of random weights rather than a cost."""
    names = layer_weight_specs(entry.config, layers)
    with torch.no_grad():
        model = TorchModel(entry.config, seed=seed, only=names).eval()  # nothing but what is measured
        weights = {k: v.detach() for k, v in model.effective_weights().items()}
    for name in ("wte", "wpe"):  # N(0, 0.02^2) each -> N(0, 1/2) each, N(0, 1) summed
        if name in weights:
            weights[name] = weights[name] * (math.sqrt(0.5) / 0.02)
    return weights


def server_weights(entry: SuiteEntry, suite: Suite, layers: list[int]) -> dict[str, torch.Tensor]:
    """The server's weights of what a run reads (`layer_weight_specs`): from the file the suite names
    (`weights:`), else synthetic from its seed."""
    source = suite.weights_of(entry.name)
    if source is None:
        return synthetic_weights(entry, suite.seed, layers)
    kind, path = source
    return load_weights(kind, path, entry.config, layer_weight_specs(entry.config, layers))


def synthetic_input(entry: SuiteEntry, seed: int) -> torch.Tensor:
    """The client's input embeddings (T, d), unit-variance as GPT-2's embedded tokens roughly are."""
    gen = torch.Generator().manual_seed(seed + 1)
    return torch.randn(entry.config.T, entry.config.d, generator=gen)


def synthetic_prompt(cfg: ModelConfig, seed: int) -> list[int]:
    """The client's prompt end to end: T token ids drawn uniformly from 0..vocab-1 by
    `torch.randint(0, vocab, (T,), generator=torch.Generator().manual_seed(seed + 1))` (the record keeps
    them: `Measured.prompt`)."""
    return torch.randint(0, cfg.vocab, (cfg.T,), generator=torch.Generator().manual_seed(seed + 1)).tolist()


def synthetic_tokens(entry: SuiteEntry, seed: int) -> torch.Tensor:
    """The client's prompt end to end (`synthetic_prompt`) as one-hot rows (T, vocab)."""
    ids = torch.tensor(synthetic_prompt(entry.config, seed))
    return torch.nn.functional.one_hot(ids, entry.config.vocab).to(torch.float32)


def synthetic_decode_input(entry: SuiteEntry, seed: int) -> torch.Tensor:
    """The input embeddings of the positions fed back while generating (new_tokens - 1, d): the stack
    alone (scope: layers) does not choose them, so they are drawn as the prompt's are."""
    gen = torch.Generator().manual_seed(seed + 2)
    return torch.randn(entry.config.new_tokens - 1, entry.config.d, generator=gen)


def _rows(ops: Any, weights: Any, x: Any, start: int, stop: int) -> Any:
    """Positions start..stop-1 of the shared input (a layout step: nothing is exchanged)."""
    return ops.rows(x, start, stop)


def _token_counts(context: int, counts: StepCounts) -> TokenCounts:
    return TokenCounts(
        context=context, wall_s=counts.wall_s, by_kind={k: _counts(c) for k, c in counts.by_kind.items()}
    )


def _decode(
    session: Session,
    weights: Any,
    cfg: Any,
    steps: list[Stage],
    cache: KVCache,
    first: Any,
    fed: Any,
    emit: Emit,
    variant: str,
    full: bool = False,
) -> tuple[list[TokenCounts], StepCounts | None, list[Any]]:
    """Every decode step after the prefill, each over the sampled layers once (layers of a kind cost
    the same at each step too, so the counts are exact), reusing what `Session.prepare` opened once.
    End to end, each step's input is the token the last one chose (`first`: the prefill's), a secret
    one-hot row; else the positions fed back, `fed` (new_tokens - 1, d), shared; end to end, a sampled
    run (not `full`) runs the head at `head_sample`'s steps alone. Returns each step's counts over the
    stack, the set-up's, and (end to end, the head run at every step) every token chosen, secret, in order."""
    setup: StepCounts | None = None
    # every weight products use (`multiplied`): the head's (wte, for the embedding lookup and the tied LM head,
    # and the final LayerNorm's gain; wpe's rows are added), the input stage's and each layer kind's
    head = multiplied(head_param_specs(cfg) | input_param_specs(cfg))
    parts = [head] + [multiplied(layer_param_specs(cfg, i)) for _, _, i in steps if isinstance(i, int)]
    times = [1] + [t for _, t, i in steps if isinstance(i, int)]
    for specs, n in zip(parts, times, strict=True):  # the head's and each layer kind's weights
        opened = session.prepare({name: weights[name] for name in specs}) if specs else None
        if opened is not None:
            setup = setup or StepCounts()
            setup.add(opened, n)
    tokens, chosen = [], [first]
    try:
        if cfg.new_tokens > 1:  # unmeasured, on a copy of the cache: a decode step's shapes run once before
            h = (
                first
                if cfg.scope == "end_to_end"
                else session.measure(functools.partial(_rows, start=0, stop=1), weights, fed)[0]
            )
            held = cache.copy()
            for _, _, index in steps:
                h, _ = session.measure(functools.partial(_run, cfg=cfg, index=index, cache=held), weights, h)
        heads = set(range(1, cfg.new_tokens)) if full else head_sample(cfg)
        last: dict[Any, StepCounts] = {}  # end to end: each head stage's counts where it last ran
        embedded = None
        for j in range(1, cfg.new_tokens):
            total = StepCounts()
            if cfg.scope == "end_to_end":
                h = chosen[-1]
            else:
                h, _ = session.measure(functools.partial(_rows, start=j - 1, stop=j), weights, fed)
            for _, n, index in steps:
                if index in HEAD_STAGES and j not in heads:  # the same shapes as where it ran: its counts
                    total.add(last[index], n)
                    if index == "embed":
                        cache.positions += 1
                        h = embedded
                    continue
                h, counts = session.measure(functools.partial(_run, cfg=cfg, index=index, cache=cache), weights, h)
                total.add(counts, n)
                if index in HEAD_STAGES:
                    last[index] = counts
                if index == "embed":
                    embedded = h
            if j in heads:
                chosen.append(h)
            tokens.append(_token_counts(cfg.T + j, total))
            emit({"event": "step", "variant": variant, "step": f"decode step {j}", "pass": 1, "passes": 1})
    finally:
        session.release()
    every = cfg.scope == "end_to_end" and len(heads) == cfg.new_tokens - 1
    return tokens, setup, chosen if every else []  # a token fed back unchosen: no tokens of its own


def _warm_up(ops: Any, weights: Any, x: Any, cfg: Any, index: int) -> Any:
    """An unmeasured pass of the prompt through layer `index` (end to end, from the embedding lookup
    to the logits), so that timing is that of steady state."""
    e2e = cfg.scope == "end_to_end"
    h = layer(ops, weights, embed(ops, weights, x, 0) if e2e else x, cfg, index)
    return logits(ops, weights, h, cfg) if e2e else h


def _head_steps(cfg: Any, full: bool) -> list[int] | None:
    """The decode steps a run ran the head at, where not every one (the record's `head_steps`)."""
    sample = head_sample(cfg)
    return sorted(sample) if not full and cfg.scope == "end_to_end" and len(sample) < cfg.new_tokens - 1 else None


def _run(ops: Any, weights: Any, x: Any, cfg: Any, index: int | str | None, cache: KVCache | None = None) -> Any:
    """One stage of a pass (`plan.stages`) on its input; the embedding lookup advances the cache's positions."""
    if index == "embed":
        past = cache.positions if cache is not None else 0
        if cache is not None:
            cache.positions = past + x.shape[0]
        return embed(ops, weights, x, past)
    if index == "logits":
        return logits(ops, weights, x, cfg)
    if index == "argmax":
        return ops.argmax(x)
    return input_stage(ops, weights, x, cfg) if index is None else layer(ops, weights, x, cfg, int(index), cache)


def _median_pass(label: str, passes: list[StepCounts], exact: bool) -> StepCounts:
    """One step's passes as one: the median pass's counts (by seconds), with the fastest and slowest
    passes' seconds in `spread`. With a backend whose counts are deterministic (`exact`), every pass
    must have moved the same bytes in the same rounds."""
    if exact and len({(c.total().sent, c.total().rounds) for c in passes}) > 1:
        raise RuntimeError(f"{label}: two passes moved different bytes or rounds")
    ordered = sorted(passes, key=lambda c: c.wall_s)
    median = ordered[len(ordered) // 2]
    comm = sorted(c.total().comm_s for c in passes)
    median.spread = {
        "wall_s_min": ordered[0].wall_s,
        "wall_s_max": ordered[-1].wall_s,
        "comm_s_min": comm[0],
        "comm_s_max": comm[-1],
    }
    return median


def _timed_walk(
    session: Session,
    weights: Any,
    x: Any,
    cfg: Any,
    steps: list[Stage],
    opts: PartyOptions,
    emit: Emit,
    variant: str,
    cache: KVCache | None = None,
) -> tuple[list[Any], list[StepCounts]]:
    """Walk the steps `opts.repeats` times, passes interleaved (every step once, then every step again),
    so that a passing slowdown of the machine falls on one pass of several steps rather than on every
    pass of one. The first pass walks the stack (extending `cache`, a generation's); later passes
    rerun each step on the input and cache it had then, so timing cannot change the result. Returns
    the first pass's inputs of every step and its output, and each step's median pass (`_median_pass`)."""
    inputs: list[Any] = []  # each step's input in the first pass
    passes: list[list[StepCounts]] = [[] for _ in steps]
    before = cache.copy() if cache is not None else None
    out = x
    for n in range(opts.repeats):
        for i, (label, _, index) in enumerate(steps):
            if n == 0:
                inputs.append(out)
            held = cache if n == 0 or before is None else before.copy()
            run = functools.partial(_run, cfg=cfg, index=index, cache=held)
            tied = index == "logits"  # the tied LM head reuses what the embedding lookup opened, uncounted here
            if tied:
                session.prepare({"wte": weights["wte"]})
            y, counts = session.measure(run, weights, inputs[i])
            if tied:
                session.release()
            passes[i].append(counts)
            if n == 0:
                out = y
            emit({"event": "step", "variant": variant, "step": label, "pass": n + 1, "passes": opts.repeats})
    medians = [_median_pass(label, runs, opts.exact) for (label, _, _), runs in zip(steps, passes, strict=True)]
    return [*inputs, out], medians


def _reference(
    entry: SuiteEntry, seed: int, weights: dict[str, torch.Tensor], layers: list[int], gelu: str
) -> tuple[torch.Tensor, list[int] | None]:
    """The plaintext interpreter on the same input and layers, in the same order: the prompt's hidden
    states (end to end: its last position's logits, and the greedy tokens of the whole generation)."""
    cfg, ops = entry.config, TorchOps(gelu)
    with torch.no_grad():
        if cfg.scope == "end_to_end":
            cache, token, ids, first = KVCache(), synthetic_tokens(entry, seed), [], None
            for _ in range(max(cfg.new_tokens, 1)):
                token, scores = step(ops, weights, token, cfg, cache, layers)
                first = scores if first is None else first
                ids.append(int(token.argmax()))
            assert first is not None
            return first, ids
        y = input_stage(ops, weights, synthetic_input(entry, seed), cfg)
        for i in layers:
            y = layer(ops, weights, y, cfg, i)
    return y, None


def error_scope(sample: dict[int, int], L: int, full: bool) -> str:
    """What the MPC error figure covers."""
    if full:
        return f"the whole stack ({L} layers)"
    layers = ", ".join(str(i) for i in sorted(sample))
    which = f"layer {layers}" if len(sample) == 1 else f"layers {layers}"
    return f"the input stage and {which} (one per layer kind) applied in turn, not all {L} layers"


class _Traffic(TypedDict):
    """Bytes sent and received (B), rounds, seconds inside exchanges (s), round trips: record fields."""

    sent: int
    received: int
    rounds: int
    comm_s: float
    round_trips: int


def _traffic(c: Counts) -> _Traffic:
    return {
        "sent": c.sent,
        "received": c.received,
        "rounds": c.rounds,
        "comm_s": c.comm_s,
        "round_trips": c.round_trips,
    }


def _counts(c: Counts) -> PartyCounts:
    return PartyCounts(**_traffic(c), wall_s=c.wall_s)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def measure_variant(session: Session, opts: PartyOptions, entry: SuiteEntry, emit: Emit) -> PartyResult:
    """This party's counts for one variant, extrapolated to the whole stack."""
    cfg, rank, seed = entry.config, opts.rank, opts.suite.seed
    sample = sample_of(cfg, opts.full)
    layers = sorted(sample)
    specs = {n: s.shape for n, s in layer_weight_specs(cfg, layers).items()}
    total, step_log = StepCounts(), []
    with _PeakRSS() as rss:
        plain_w = server_weights(entry, opts.suite, layers) if rank == 0 else None
        generating, e2e = cfg.new_tokens > 1, cfg.scope == "end_to_end"
        x_plain = None
        if rank == 1 and e2e:  # the prompt's tokens; later ones are chosen under MPC
            x_plain = synthetic_tokens(entry, seed)
        elif rank == 1:  # the prompt's embeddings, and those of the positions fed back while generating
            x_plain = synthetic_input(entry, seed)
            x_plain = torch.cat([x_plain, synthetic_decode_input(entry, seed)]) if generating else x_plain
        shape = (cfg.T, cfg.vocab) if e2e else (cfg.context if generating else cfg.T, cfg.d)
        weights, x_all = session.share(plain_w, specs, x_plain, shape)
        x, fed = x_all, None
        if generating and not e2e:
            x, _ = session.measure(functools.partial(_rows, start=0, stop=cfg.T), weights, x_all)
            fed, _ = session.measure(functools.partial(_rows, start=cfg.T, stop=cfg.context), weights, x_all)
        if opts.warm_up:  # end to end, the embedding lookup before and the logits after the layer
            session.measure(functools.partial(_warm_up, cfg=cfg, index=layers[0]), weights, x)
            emit({"event": "warm-up", "variant": entry.name})
        steps = stages(sample, cfg)
        cache = KVCache() if generating else None
        walked, medians = _timed_walk(session, weights, x, cfg, steps, opts, emit, entry.name, cache)
        for (label, times, _), counts in zip(steps, medians, strict=True):
            total.add(counts, times)
            step_log.append(
                StepRecord(
                    step=label, stands_for=times, passes=opts.repeats, **_traffic(counts.total()), wall_s=counts.wall_s
                )
            )
        generation = setup = None
        chosen = [walked[-1]] if e2e else []  # end to end: the token the prefill chose, secret
        if generating:
            assert cache is not None
            decoded, opened, chosen = _decode(
                session, weights, cfg, steps, cache, walked[-1], fed, emit, entry.name, opts.full
            )
            generation = [_token_counts(cfg.T, total), *decoded]
            setup = _counts(opened.total()) if opened is not None else None
        out = session.reveal(walked[-2] if e2e else walked[-1])  # end to end: the prompt's logits
        # only the generated tokens are revealed, to the client
        revealed = [session.reveal(t, to=1) for t in chosen]
    tokens = [int(t.argmax()) for t in revealed] if rank == 1 and revealed else None
    error = reference = expected = None
    if rank == 0 and plain_w is not None:  # the reference needs the client's input: synthetic, from its seed
        ref, expected = _reference(entry, seed, plain_w, layers, opts.gelu)
        error, reference = _finite((out - ref).abs().max().item()), _finite(ref.abs().max().item())
    return PartyResult(
        rank=rank,
        **_traffic(total.total()),
        wall_s=total.wall_s,
        **cast(dict[str, Any], total.spread),
        by_kind={k: _counts(c) for k, c in total.by_kind.items()},
        dealer=_counts(total.dealer),
        counters=total.own,
        peak_rss_bytes=rss.peak,
        max_abs_error=error,
        max_abs_reference=reference,
        layers_measured={str(i): sample[i] for i in layers},
        steps=step_log,
        choices=session.choices,
        generation=generation,
        setup=setup,
        tokens=tokens,
        reference_tokens=expected,
        head_steps=_head_steps(cfg, opts.full),
        prompt=synthetic_prompt(cfg, seed) if e2e and rank == 0 else None,
    )


def _merged(counts: Sequence[PartyCounts]) -> KindTotals:
    """Both parties' counts of one operation kind as one: bytes = sent by both (each byte once, both
    directions); rounds and seconds = the larger party's (they run in lockstep)."""
    return KindTotals(
        bytes=sum(c.sent for c in counts),
        rounds=max(c.rounds for c in counts),
        wall_s=max(c.wall_s for c in counts),
        comm_s=max(c.comm_s for c in counts),
        round_trips=max(c.round_trips for c in counts),
    )


# sent by a party, merged into Measured
PARTY_ONLY = {
    "layers_measured",
    "max_abs_error",
    "max_abs_reference",
    "generation",
    "setup",
    "tokens",
    "reference_tokens",
    "head_steps",
    "accuracy",
    "prompt",
}


def merge_parties(parties: Sequence[PartyResult], full: bool, L: int, roles: dict[int, str]) -> Measured:
    """One variant's measurement from both parties' results. Totals are consistent with the merged kinds
    by construction: bytes the sum of the kinds' (the bytes both sent), rounds the sum of the kinds'
    (each kind's busier party: under SPU the parties' receive counts differ kind by kind, so the busier
    party's total would be less than what its kinds add up to); seconds the larger party's."""
    parties = sorted(parties, key=lambda p: p.rank)
    first = parties[0]
    error, reference = first.max_abs_error, first.max_abs_reference
    usable = error is not None and reference is not None and error <= USABLE_RELATIVE_ERROR * max(reference, 1e-12)
    by_kind = {kind: _merged([p.by_kind[kind] for p in parties]) for kind in KINDS}
    dealt = any(p.dealer.rounds for p in parties)
    return Measured(
        sampled=not full,
        repeats=first.steps[0].passes,
        layers_measured=first.layers_measured,
        bytes=sum(k.bytes for k in by_kind.values()),
        rounds=sum(k.rounds for k in by_kind.values()),
        wall_s=max(p.wall_s for p in parties),
        comm_s=max(p.comm_s for p in parties),
        **{key: max(getattr(p, key) for p in parties) for key in SPREAD},
        max_abs_error=error,
        max_abs_reference=reference,
        error_scope=error_scope({int(k): v for k, v in first.layers_measured.items()}, L, full),
        usable=usable,
        by_kind=by_kind,
        dealer=DealerTotals(
            bytes=sum(p.dealer.sent + p.dealer.received for p in parties), rounds=max(p.dealer.rounds for p in parties)
        )
        if dealt
        else None,
        parties=[PartyRecord(role=roles[p.rank], **p.model_dump(exclude=PARTY_ONLY)) for p in parties],
        generation=_merged_generation(parties),
        tokens=_merged_tokens(parties),
        accuracy=first.accuracy,
        prompt=first.prompt,
    )


def _merged_generation(parties: Sequence[PartyResult]) -> Generation | None:
    """Both parties' passes of a generation as one, pass by pass, as `merge_parties` merges kinds."""
    if parties[0].generation is None:
        return None
    steps = []
    for passes in zip(*(p.generation or [] for p in parties), strict=True):
        by_kind = {kind: _merged([t.by_kind[kind] for t in passes]) for kind in KINDS}
        steps.append(
            TokenStep(
                context=passes[0].context,
                bytes=sum(k.bytes for k in by_kind.values()),
                rounds=sum(k.rounds for k in by_kind.values()),
                wall_s=max(t.wall_s for t in passes),
                by_kind=by_kind,
            )
        )
    setups = [p.setup for p in parties if p.setup is not None]
    setup = DealerTotals(bytes=sum(c.sent for c in setups), rounds=max(c.rounds for c in setups)) if setups else None
    return Generation(steps=steps, setup=setup, head_steps=parties[0].head_steps)


def _merged_tokens(parties: Sequence[PartyResult]) -> Tokens | None:
    """End to end: the tokens the client learnt, beside the plaintext interpreter's greedy ones."""
    got = next((p.tokens for p in parties if p.tokens is not None), None)
    expected = next((p.reference_tokens for p in parties if p.reference_tokens is not None), None)
    return Tokens(generated=got, plaintext=expected) if got is not None and expected is not None else None


def _ticker(emit: Emit, every_s: float = 2.0) -> Callable[[], None]:
    """A heartbeat for long steps: a "tick" event at most every `every_s` seconds of progress."""
    last = time.monotonic()

    def tick() -> None:
        nonlocal last
        if time.monotonic() - last >= every_s:
            last = time.monotonic()
            emit({"event": "tick"})

    return tick


def _watch_waits(session: Session, emit: Emit, stop: threading.Event, after_s: float = 2.0) -> None:
    """While this party is blocked in an exchange for over `after_s`, say so every second: a monitor
    can then tell the party that hangs (silent) from the one waiting for it."""
    while not stop.wait(1.0):
        since = session.waiting_since
        if since is not None and time.monotonic() - since > after_s:
            emit({"event": "waiting", "for_s": round(time.monotonic() - since, 1)})


def describe_run(suite: Suite, full: bool, repeats: int) -> dict[str, Any]:
    """What every rank must agree on before running (`pibench.measuring.peers.compare_runs`): the measuring code
    (`code_digest`), the suite (its digest covers dimensions, variants, seed, backend and its settings) and the
    options that change what runs."""
    from pibench.util.machine import code_digest

    return {"code": code_digest(), "backend": suite.backend, "suite": suite.digest, "full": full, "repeats": repeats}


def join_run(backend: Backend, opts: PartyOptions, describe: dict[str, Any]) -> tuple[Peers, Rendezvous]:
    """Join the run's other ranks on pibench's authenticated channel (rank 0 listening at the rendezvous
    address), agree on what runs, and learn where the backend's own transport listens. Returns the
    channel and the backend's rendezvous."""
    roles = backend.ranks(opts.suite.settings)
    rank, given = opts.rank, opts.rendezvous
    host, port = given.host, given.port
    join_s = max(opts.timeout_s, STARTUP_GRACE_S)
    if rank == 0:
        if given.listen_fd is not None:
            listener = socket.socket(fileno=given.listen_fd)
        else:
            check_listen_host(host, opts.allow_wildcard)
            try:
                listener = listening_socket(host, port)
            except OSError as err:
                raise PibenchError(f"party 0 (server) cannot listen on {given.url}: {err.strerror or err}") from None
        try:
            peers, _ = Peers.serve(listener, roles, opts.secret, describe, opts.timeout_s, join_s)
        finally:
            listener.close()
        own = host
    else:
        peers, _ = Peers.join(rank, (host, port), roles, opts.secret, describe, opts.timeout_s, join_s)
        own = peers.peers[0].sock.getsockname()[0]  # the address this host reaches rank 0 from
    listed = given.listed(rank) if rank else None
    if listed:
        check_listen_host(listed[0], opts.allow_wildcard)
    try:
        address, transport_listener = backend.announce(rank, own, listed)
    except OSError as err:
        raise PibenchError(f"party {rank} ({roles[rank]}) cannot listen on {own}: {err.strerror or err}") from None
    announced = peers.exchange(address, among=tuple(sorted(roles)))
    return peers, backend.transport(announced, transport_listener)


def _doing(event: dict[str, Any]) -> str | None:
    """What a progress event says this party is doing, for its heartbeats."""
    kind = event.get("event")
    if kind == "variant":
        return f"starting variant '{event['variant']}'"
    if kind == "warm-up":
        return f"past the warm-up of variant '{event['variant']}'"
    if kind == "step":
        return f"past {event['step']} of variant '{event['variant']}' (pass {event['pass']} of {event['passes']})"
    if kind == "accuracy":
        return f"past accuracy window {event['window']} of {event['windows']} of variant '{event['variant']}'"
    return None


def _party_result(obj: Any, rank: int, peers: Peers) -> PartyResult:
    """A party's results as the other sent them: validated, or a one-line error naming it."""
    return validated(PartyResult, obj, f"{peers.name(rank)} sent results that are not valid")


def run_party(backend: Backend, opts: PartyOptions, emit: Emit) -> list[Measured]:
    """Run every variant of the suite as party `opts.rank`; returns the merged measurements."""
    settings = opts.suite.settings
    opts = dataclasses.replace(
        opts,
        gelu=backend.reference_gelu(settings),
        exact=not backend.count_tolerance,
        repeats=backend.passes(opts.suite.repeats),
    )
    backend.load()
    peers, transport = join_run(backend, opts, describe_run(opts.suite, opts.full, opts.repeats))
    peers.doing = "joining the backend"
    report = emit

    def emit_and_note(event: dict[str, Any]) -> None:  # what a party reports, its heartbeats say too
        peers.doing = _doing(event) or peers.doing
        report(event)

    emit = emit_and_note

    try:
        session = backend.session(
            opts.rank, transport, settings, opts.timeout_s, on_op=_ticker(emit), seed=opts.suite.seed
        )
    except BaseException:
        peers.close()
        raise
    emit({"event": "ready", "rank": opts.rank})
    measured = []
    stop = threading.Event()
    threading.Thread(target=_watch_waits, args=(session, emit, stop), daemon=True).start()
    roles = backend.ranks(settings)
    try:
        for n, entry in enumerate(opts.suite.entries):
            emit({"event": "variant", "variant": entry.name})
            warm = backend.warm_up == "variant" or n == 0
            mine = measure_variant(session, dataclasses.replace(opts, warm_up=warm), entry, emit)
            if opts.suite.accuracy is not None:  # after the costs, uncounted: the trained model on real text
                peers.doing = f"measuring the accuracy of variant '{entry.name}' on real text"
                accuracy = measure_accuracy(session, opts.suite, entry, opts.rank, opts.gelu, emit, peers.exchange)
                mine = mine.model_copy(update={"accuracy": accuracy})
            peers.doing = f"exchanging the results of variant '{entry.name}'"
            theirs = [
                _party_result(obj, r, peers) for r, obj in enumerate(peers.exchange(mine.model_dump(mode="json")))
            ]
            merged = merge_parties(theirs, opts.full, entry.config.L, roles)
            measured.append(merged)
            emit({"event": "result", "variant": entry.name, "measured": merged.model_dump(mode="json")})
        peers.doing = "finishing"
    finally:
        stop.set()
        lifetime = session.dealer_lifetime
        session.close()
        peers.close()
    if lifetime is not None and opts.rank == 0:
        emit({"event": "dealer_lifetime", "counts": lifetime.to_json()})
    return measured
