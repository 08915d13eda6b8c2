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
