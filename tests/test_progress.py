"""Progress bars estimate what is left from the steps after the first, which carries the start-up."""

from __future__ import annotations

import re
import time

from pibench.util.progress import Progress


def _left(line: str) -> str:
    """What the bar says is left: tqdm's [elapsed<remaining, rate]."""
    return re.search(r"<([^,\]]+)", line).group(1)


def test_the_estimate_ignores_a_slow_first_step():
    """10 steps; the first took 540 s (start-up), the next two 2 s each. tqdm's own estimate from the
    average (542 + ... ) / 3 per step would say about 7 x 181 s = 21 minutes; the steady rate, 2 steps in
    4 s, says 7 x 2 s = 14 s."""
    bar = Progress(10, "step", show=True)
    bar.bar.start_t -= 540.0  # the start-up, as if it had taken 540 s before the first step ended
    bar.advance(1)
    assert _left(bar.estimate()) == "?"  # one step: no steady rate yet
    n0, t0 = bar.bar.steady_from
    bar.bar.steady_from = (n0, t0 - 4.0)  # the next two steps took 2 s each
    bar.advance(2)
    assert _left(bar.estimate()) == "00:14"
    assert bar.estimate().split("[")[1].startswith("09:0")  # elapsed still counts from the start (9 min)
    bar.close()


def test_a_total_learnt_late_and_a_disabled_bar():
    bar = Progress(None, "step", show=False)
    bar.advance(3, total=12)
    assert (bar.n, bar.bar.total) == (3, 12)
    time.sleep(0.01)
    bar.advance(0)  # nothing done: the clock and count stay
    assert bar.n == 3
    bar.close()


def test_a_generations_bar_counts_every_step_the_parties_report(tmp_path, monkeypatch):
    """Issue 32: a tiny generation suite's bar had a total of 4 (the prefill's stages of the layers
    scope) and ran 16 steps, so it showed no percentage and no estimate. Its total now counts what the
    parties report. By hand, end to end, L=2 of one layer kind, one timed pass, 4 tokens: the prefill's
    5 stages (embedding, input stage, layer 0, logits, argmax) once, then 3 decode steps: 8 steps."""
    from pibench.measuring import runner
    from pibench.suites.loader import load_suite
    from tests.conftest import write_suite

    bars = []

    class Recorded(runner.Progress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(runner, "Progress", Recorded)
    text = "model: {L: 2, H: 2, d: 16, T: 4}\nvariants: [sm_ln_g]\nrepeats: 1\nscope: end_to_end\nvocab: 32\n"
    suite = load_suite(write_suite(tmp_path, text + "generate: {new_tokens: 4}\n"))
    runner.run_local(suite, progress=False)
    (bar,) = bars
    assert (bar.n, bar.bar.total) == (8, 8)
