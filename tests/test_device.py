"""`--device cuda`: parties' tensors on a GPU, with the same bytes and rounds as on the CPU. This
project's machines and CI have no GPU, so the comparison is skipped there and only the refusals run."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import run_cli, run_each, write_suite

TINY = "model: {L: 1, H: 2, d: 32, T: 8}\nvariants: [sm_ln_g, sm_ln_r]\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused_before_anything_runs(tmp_path):
    out = tmp_path / "r.json"
    proc = run_cli("run", str(write_suite(tmp_path, TINY)), "--device", "cuda", "--out", str(out))
    assert proc.returncode == 2 and not out.exists()
    assert proc.stderr.strip().endswith(
        "\npibench: error: crypten.device cuda: this machine has no GPU that torch can use"
    )


def test_device_on_a_backend_without_one(tmp_path):
    proc = run_cli("cost", str(write_suite(tmp_path, TINY)), "--backend", "spu", "--device", "cuda")
    assert proc.returncode == 2
    assert "--device: backend spu has no device setting (it runs on the CPU)" in proc.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here (CI and this project's machines have none)")
def test_counts_on_the_gpu_equal_the_cpu(tmp_path):
    suite = write_suite(tmp_path, TINY)
    records = {
        d: rec for d, (_, rec) in run_each(tmp_path, {d: (suite, ["--device", d]) for d in ("cpu", "cuda")}).items()
    }
    for cpu, gpu in zip(records["cpu"]["variants"], records["cuda"]["variants"], strict=True):
        assert (gpu["measured"]["bytes"], gpu["measured"]["rounds"]) == (
            cpu["measured"]["bytes"],
            cpu["measured"]["rounds"],
        )
        assert gpu["measured"]["usable"]
    assert records["cuda"]["backend"]["settings"]["device"] == "cuda"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here (CI and this project's machines have none)")
def test_train_on_the_gpu_then_run_its_weights_on_the_gpu_with_their_accuracy(tmp_path):
    """`pibench train --device cuda` then `pibench run --device cuda` of the same suite: the trained
    checkpoint's costs equal the CPU run's, and its accuracy on real text is measured on the GPU too,
    within the CPU run's (the same windows and weights; the plaintext reference runs on the CPU both times,
    fixed-point rounding may differ)."""
    suite = write_suite(
        tmp_path,
        "model: {L: 1, H: 2, d: 32, T: 8}\nrepeats: 1\nvariants: [sm_scfuffn]\n"
        "train: {tokens: 960, batch: 4, eval_batches: 1, corpus_bytes: 100000}\n"
        "weights: {checkpoint: weights}\naccuracy: {windows: 2}\n",
    )
    trained = run_cli("train", str(suite), "--device", "cuda", "--out", str(tmp_path / "q.json"), "--no-progress")
    assert trained.returncode == 0, trained.stderr
    records = {
        d: rec for d, (_, rec) in run_each(tmp_path, {d: (suite, ["--device", d]) for d in ("cpu", "cuda")}).items()
    }
    cpu, gpu = (records[d]["variants"][0]["measured"] for d in ("cpu", "cuda"))
    assert (gpu["bytes"], gpu["rounds"]) == (cpu["bytes"], cpu["rounds"])
    assert gpu["accuracy"]["loss_plaintext"] == pytest.approx(cpu["accuracy"]["loss_plaintext"], rel=1e-9)
    assert gpu["accuracy"]["loss_mpc"] == pytest.approx(cpu["accuracy"]["loss_mpc"], abs=1e-2)
