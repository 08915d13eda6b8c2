"""The plaintext torch interpreter runs every variant, trains (autograd), and folds reparametrisations."""

from __future__ import annotations

import pytest
import torch

from pibench.models.plaintext import TorchModel, TorchOps
from pibench.models.variants import VARIANTS, resolve

TINY = {"L": 2, "H": 2, "d": 32, "T": 8}


@pytest.mark.parametrize("name", VARIANTS.names())
def test_every_variant_runs_and_every_weight_gets_a_gradient(name):
    model = TorchModel(resolve(name, TINY), seed=1)
    x = torch.randn(8, 32, generator=torch.Generator().manual_seed(2))
    y = model(x)
    assert y.shape == (8, 32) and torch.isfinite(y).all()
    y.pow(2).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_one_training_step_lowers_the_loss():
    model = TorchModel(resolve("ereg_smt_scfuffn", TINY), seed=0)
    x, target = torch.randn(8, 32), torch.randn(8, 32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(2):
        opt.zero_grad()
        loss = (model(x) - target).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[1] < losses[0]


def test_weight_norm_folds_into_plain_weights():
    model = TorchModel(resolve("sm_wnffn", TINY))
    holder = model.weights[model.names.index("h0.ffn.in.w")]
    with torch.no_grad():
        holder.parametrizations.weight.original0.fill_(2.0)  # g: the norm of every output column
    w = model.effective_weights()["h0.ffn.in.w"]
    assert w.shape == (32, 128)
    torch.testing.assert_close(w.norm(dim=0), torch.full((128,), 2.0))


def test_spectral_norm_folds_into_unit_spectral_norm():
    torch.manual_seed(0)  # spectral_norm draws its power-iteration start from the global generator
    model = TorchModel(resolve("sm_snffn", TINY))
    model.train()
    with torch.no_grad():
        for _ in range(200):  # one power iteration per call in training mode
            model.effective_weights()
    model.eval()
    w = model.effective_weights()["h1.ffn.out.w"]
    # W / sigma(W): spectral norm 1 once the power iteration has converged
    assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, abs=1e-3)


def test_public_constants():
    ops = TorchOps()
    # causal average for T=3: rows [1,0,0], [1/2,1/2,0], [1/3,1/3,1/3]
    expect = torch.tensor([[1, 0, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]])
    torch.testing.assert_close(ops.causal_average(3), expect)
    assert ops.causal_mask(3).tolist() == [[0, -40, -40], [0, 0, -40], [0, 0, 0]]


def test_gelu_forms_differ_only_slightly():
    x = torch.linspace(-4, 4, 101)
    tanh, erf = TorchOps("tanh").gelu(x), TorchOps("erf").gelu(x)
    assert 0 < (tanh - erf).abs().max().item() < 1e-3  # the tanh form is within 1e-3 of the exact GELU
    with pytest.raises(ValueError, match="gelu must be"):
        TorchOps("cubic")


def test_causal():
    # changing a later token leaves earlier outputs unchanged, for both block kinds
    for name in ("sm_ln_g", "hehofmann_scffn"):
        model = TorchModel(resolve(name, TINY)).eval()
        x = torch.randn(8, 32)
        x2 = x.clone()
        x2[5] += torch.randn(32)  # not a constant shift, which LayerNorm would remove
        with torch.no_grad():
            y, y2 = model(x), model(x2)
        torch.testing.assert_close(y[:5], y2[:5])
        assert not torch.allclose(y[5:], y2[5:])
