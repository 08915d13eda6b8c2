"""Check a calibration against whole layers it was not fitted to: for every measured layer step of a
run record, the calibrated prediction of that layer's bytes, rounds and seconds beside the
measurement.

    python bench/validate_calibration.py RECORD [--calibration FILE]

The calibration defaults to the one shipped for the record's backend (its settings must match the
record's). Prints one line per (variant, layer) and the largest relative differences; exits 1 when
a layer's predicted bytes differ from the measured by more than --tolerance (default 2%).
"""

from __future__ import annotations

import argparse
import sys

from pibench.calibration.fit import load_calibration, shipped_calibration
from pibench.counting.sampling import trace_layer
from pibench.models.config import ModelConfig
from pibench.results.records import read_record


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("record")
    ap.add_argument("--calibration")
    ap.add_argument("--tolerance", type=float, default=0.02)
    args = ap.parse_args()
    record = read_record(args.record)
    backend = record.backend.name
    cal = load_calibration(args.calibration) if args.calibration else shipped_calibration(backend)
    cal.check_settings(backend, record.backend.settings, f"record '{args.record}'")
    worst = {"bytes": 0.0, "rounds": 0.0, "wall_s": 0.0}
    print(f"{'variant':<26} {'layer':>5} {'bytes measured':>15} {'predicted':>15} {'ratio':>7}", end="")
    print(f" {'rounds':>7} {'s meas.':>8} {'s pred.':>8}")
    for v in record.variants:
        cfg = ModelConfig(**v.config)
        parties = v.measured.parties
        for i, step in enumerate(parties[0].steps):
            if not step.step.startswith("layer "):
                continue
            index = int(step.step.split()[1])
            measured = sum(p.steps[i].sent for p in parties)
            rounds = max(p.steps[i].rounds for p in parties)
            wall = max(p.steps[i].wall_s for p in parties)
            predicted = cal.predict(trace_layer(cfg, index))
            ratios = {
                "bytes": predicted["bytes"] / measured,
                "rounds": predicted["rounds"] / rounds if rounds else 1.0,
                "wall_s": predicted["wall_s"] / wall,
            }
            for key, r in ratios.items():
                worst[key] = max(worst[key], abs(r - 1))
            print(
                f"{v.name:<26} {index:>5} {measured:>15,} {predicted['bytes']:>15,} {ratios['bytes']:>7.4f} "
                f"{ratios['rounds']:>7.3f} {wall:>8.1f} {predicted['wall_s']:>8.1f}"
            )
    print(" ".join(f"largest |predicted/measured - 1| of {k}: {w:.2%}" for k, w in worst.items()))
    return 0 if worst["bytes"] <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
