"""What a measurement is, typed from the party that counts it to the record that keeps it.

`PartyResult`: one party's counts for one variant, extrapolated to the whole stack, as it sends them to
the others (JSON over `pibench.measuring.peers`); `merge_parties` makes both parties' into one
`Measured` (rank 0 sends it to the runner as JSON, which validates it back); `RunInfo`: the settings
of the run itself. `pibench.results.records` embeds them in the versioned record. Strict: no extra
keys, no NaN, no strings for numbers; the kinds add up to the totals.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pibench.models.opkinds import KINDS

# An output whose largest error exceeds this fraction of its largest magnitude is unusable: the run's
# bytes and rounds are still what the protocol moved, but the model's answer would be garbage (e.g.
# CrypTen's reciprocal at 10 fraction bits, errors up to 1e13).
USABLE_RELATIVE_ERROR = 0.1

Count = Annotated[int, Field(ge=0)]
Positive = Annotated[int, Field(ge=1)]
Seconds = Annotated[float, Field(ge=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class KindTotals(Strict):
    bytes: Count
    rounds: Count
    wall_s: Seconds
    comm_s: Seconds
    round_trips: Count = 0  # network round trips the rounds wait for (0: not told apart, as rounds)


class PartyCounts(Strict):
    sent: Count
    received: Count
    rounds: Count
    comm_s: Seconds
    wall_s: Seconds
    round_trips: Count = 0  # `pibench.backends.base.Counts.round_trips`


class StepRecord(PartyCounts):
    step: str
    stands_for: Positive
    passes: Positive  # runs of the step; its seconds are the median pass's


class Spread(Strict):
    """The fastest and slowest of a step's repeated passes, summed over the stack like the median."""

    wall_s_min: Seconds
    wall_s_max: Seconds
    comm_s_min: Seconds
    comm_s_max: Seconds


class PartyMeasurement(PartyCounts, Spread):
    """One party's counts of one variant, extrapolated to the whole stack (its totals: `PartyCounts`)."""

    rank: Count
    by_kind: dict[str, PartyCounts]
    dealer: PartyCounts
    counters: dict[str, Count]
    peak_rss_bytes: Count
    steps: list[StepRecord]
    choices: dict[str, str] = Field(default_factory=dict)  # the backend's own choices (local products per shape)


class TokenCounts(Strict):
    """One party's counts of one pass of a generation (the prefill, or a decode step), over the stack."""

    context: Positive  # positions attended to: T for the prefill, T+j for decode step j
    wall_s: Seconds
    by_kind: dict[str, PartyCounts]


class AccuracyRecord(Strict):
    """Accuracy under MPC on real text (`pibench.measuring.accuracy`): the trained byte model's logits
    under MPC against the plaintext interpreter's on the same windows. None: not finite."""

    windows: Positive
    positions: Positive  # windows x T: predictions compared
    source: str  # where the windows' text came from
    agreement: float = Field(ge=0, le=1)  # share of positions whose top-1 next byte is the same
    mean_abs_logit_error: Seconds | None  # (logit units; `Seconds` is any finite float >= 0)
    max_abs_logit_error: Seconds | None
    max_abs_logit: Seconds  # the plaintext logits' largest magnitude: the scale of the errors
    loss_mpc: Seconds | None  # mean cross-entropy of the next byte from the MPC logits, nats
    loss_plaintext: Seconds  # the same from the plaintext logits
    usable: bool  # the largest logit error within USABLE_RELATIVE_ERROR of max_abs_logit
    first_unusable_op: str | None  # where not usable: the first operation past that bound ("layer 2 softmax")
    wall_s: Seconds  # the pass's seconds, both parties' work (not in the variant's costs)

    @property
    def ppl_mpc(self) -> float | None:
        """Perplexity per byte from the MPC logits (None: not finite)."""
        return math.exp(self.loss_mpc) if self.loss_mpc is not None and self.loss_mpc < 700 else None

    @property
    def ppl_plaintext(self) -> float:
        return math.exp(min(self.loss_plaintext, 700))


class PartyResult(PartyMeasurement):
    """What a party sends the others after a variant: its counts, and (rank 0, which holds the weights
    the plaintext reference needs) the MPC output's error; None where not computed or not finite."""

    max_abs_error: Seconds | None
    max_abs_reference: Seconds | None
    layers_measured: dict[str, Positive]
    generation: list[TokenCounts] | None = None  # the prefill, then every decode step
    setup: PartyCounts | None = None  # opened once for every decode step (CrypTen's weight masks)
    tokens: list[Count] | None = None  # end to end, the client: the token ids revealed to it
    reference_tokens: list[Count] | None = None  # end to end, rank 0: the plaintext interpreter's greedy ones
    head_steps: list[Positive] | None = None  # end to end, sampled: the decode steps the head ran at
    accuracy: AccuracyRecord | None = None  # rank 0, with trained weights: accuracy under MPC on real text
    prompt: list[Count] | None = None  # end to end, rank 0: the synthetic prompt's token ids (`Measured.prompt`)


class PartyRecord(PartyMeasurement):
    """One party's counts as the record keeps them."""

    role: str


class DealerTotals(Strict):
    bytes: Count
    rounds: Count


class TokenStep(Strict):
    """Both parties' cost of one pass of a generation: the prefill (context T, yielding the first
    token) or decode step j (context T+j). Merged as a variant's kinds are (`merge_parties`)."""

    context: Positive
    bytes: Count
    rounds: Count
    wall_s: Seconds
    by_kind: dict[str, KindTotals]

    @property
    def latency_rounds(self) -> int:
        """The round trips a latency projection multiplies by the RTT (`latency_rounds`)."""
        return latency_rounds(self.rounds, self.by_kind)


class Generation(Strict):
    """A measured generation: every pass, and the one-off set-up of what decode steps reuse (bytes
    both parties sent; already within the prefill's bytes, where each weight is used once)."""

    steps: list[TokenStep] = Field(min_length=1)
    setup: DealerTotals | None
    # end to end, sampled: the decode steps the head (embedding lookup, logits, argmax: the same shapes at
    # every step) ran at, the others counting its figures; None: at every step
    head_steps: list[Positive] | None = None

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.steps)


class Tokens(Strict):
    """End to end: the token ids generated under MPC (revealed to the client alone) and the plaintext
    interpreter's greedy ones on the same weights, prompt and layers."""

    generated: list[Count] = Field(min_length=1)
    plaintext: list[Count] = Field(min_length=1)

    @property
    def first_difference(self) -> int | None:
        """The position of the first token where MPC error changed the choice (None: all equal)."""
        return next((i for i, (a, b) in enumerate(zip(self.generated, self.plaintext, strict=True)) if a != b), None)


class Measured(Spread):
    sampled: bool
    repeats: Positive  # runs of each step: seconds are medians, with the spread beside
    layers_measured: dict[str, Positive]
    bytes: Positive
    rounds: Positive
    wall_s: Annotated[float, Field(gt=0)]
    comm_s: Seconds
    max_abs_error: Seconds | None
    max_abs_reference: Seconds | None
    error_scope: str
    usable: bool
    by_kind: dict[str, KindTotals]
    dealer: DealerTotals | None
    parties: list[PartyRecord] = Field(min_length=2)
    generation: Generation | None = None  # a suite that generates: the prefill (these totals) and decode steps
    tokens: Tokens | None = None  # end to end: the tokens generated, beside the plaintext's
    accuracy: AccuracyRecord | None = None  # with trained weights: accuracy under MPC on real text
    # end to end: the synthetic prompt's T token ids, drawn from the suite's seed (`pibench.measuring.party.
    # synthetic_prompt`), so that the plaintext model can be rerun on them; None in the layers scope, whose
    # input is embeddings drawn from N(0, 1), not tokens (schema 3; None in records migrated from 2)
    prompt: list[Count] | None

    @property
    def latency_rounds(self) -> int:
        """The round trips a latency projection multiplies by the RTT (`latency_rounds`)."""
        return latency_rounds(self.rounds, self.by_kind)

    @field_validator("by_kind", mode="before")
    @classmethod
    def _every_kind(cls, value: Any) -> Any:
        """A record older than a kind (the end-to-end scope's) did not run it: zero."""
        if isinstance(value, dict):
            zero = {"bytes": 0, "rounds": 0, "wall_s": 0.0, "comm_s": 0.0}
            return {k: value.get(k, zero) for k in KINDS} | value
        return value

    @model_validator(mode="after")
    def _adds_up(self) -> Measured:
        if set(self.by_kind) != set(KINDS):
            raise ValueError(f"by_kind must have the kinds {', '.join(KINDS)}")
        if sum(k.bytes for k in self.by_kind.values()) != self.bytes:
            raise ValueError("the bytes of the kinds do not add up to bytes")
        if sum(k.rounds for k in self.by_kind.values()) != self.rounds:
            raise ValueError("the rounds of the kinds do not add up to rounds")
        return self


def latency_rounds(rounds: int, by_kind: dict[str, KindTotals]) -> int:
    """The network round trips of a pass: the kinds' `round_trips` where the backend counted them,
    else `rounds` (a record older than the count, or a backend that does not tell them apart)."""
    trips = sum(k.round_trips for k in by_kind.values())
    return trips or rounds


class DealerCheck(Strict):
    """Whole-run traffic of the dealer as each side counted it (equal when nothing is lost)."""

    dealer_sent: Count
    dealer_received: Count
    party0_received: Count
    party0_sent: Count


class RunInfo(Strict):
    mode: Literal["local", "party"]
    full: bool
    seed: Count
    ranks: dict[str, str]
    rendezvous: str
    network: str
    emulated: str | None
    project: list[str]
    timeout_s: Annotated[float, Field(gt=0)]
    elapsed_s: Seconds
    accepted_unusable: bool
    dealer: DealerCheck | None
    # the parties were warm (`pibench.measuring.workers`): processes kept from earlier cells of a sweep, not
    # started for this run (schema 3; False in records migrated from 2)
    warm_parties: bool
    # a sweep's cell run on Ray (`pibench.sweeps.ray_executor`): rank -> the node it ran on ("IP, node ID")
    nodes: dict[str, str] | None = None
