"""The ridge's dual (kernel) form against its primal: the same maps, λ path and choice on val, and the
known answer on wide pixel features (the dual is what `recon-linear` uses where a token's cell is wider
than the training rows, e.g. a 64-px stride: 12,288 values a token)."""

from __future__ import annotations

import pytest
import torch

from stageprobe.probes import training
from stageprobe.probes.training import RidgeSolver, negative_mse


def _problem(n: int, d: int, k: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Features with uneven means and scales (the standardisation matters) and noisy linear targets."""
    g = torch.Generator().manual_seed(seed)
    shift, scale = torch.randn(d, generator=g) * 3, torch.rand(d, generator=g) * 5 + 0.1
    x_tr, x_va = (torch.randn(m, d, generator=g) * scale + shift for m in (n, n // 2))
    true = torch.randn(d, k, generator=g) / d**0.5
    y_tr, y_va = (x @ true + 0.3 * torch.randn(len(x), k, generator=g) for x in (x_tr, x_va))
    return x_tr, x_va, y_tr, y_va


def test_dual_equals_primal_on_the_whole_lambda_path() -> None:
    x_tr, x_va, y_tr, y_va = _problem(n=60, d=150, k=7)
    lambdas = tuple(10.0**k for k in range(-6, 2))
    fitted = {}
    for form in ("primal", "dual"):
        solver = RidgeSolver(x_tr, max_dim=150, dtype=torch.float64, form=form)
        assert solver.dual == (form == "dual")
        fitted[form] = solver.fit(y_tr, x_va, y_va, negative_mse, lambdas)
        # every λ's map, not only the chosen one
        q, y_mean = solver._cross(y_tr)
        fitted[form + "-path"] = [solver._weights(q, y_mean, lam) for lam in lambdas]
    (primal, p_hist), (dual, d_hist) = fitted["primal"], fitted["dual"]
    assert p_hist["lambda"] == d_hist["lambda"]
    torch.testing.assert_close(torch.tensor(p_hist["val_score"]), torch.tensor(d_hist["val_score"]),
                               rtol=1e-6, atol=1e-9)
    for p_map, d_map in zip(fitted["primal-path"], fitted["dual-path"], strict=True):
        torch.testing.assert_close(d_map.weight, p_map.weight, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(d_map.bias, p_map.bias, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dual(x_va), primal(x_va), rtol=1e-4, atol=1e-5)


def test_dual_in_float32_matches_the_float64_primal_for_several_heads() -> None:
    x_tr, x_va, y_tr, y_va = _problem(n=40, d=90, k=6, seed=1)
    heads = {"a": (y_tr[:, :2], y_va[:, :2], negative_mse), "b": (y_tr[:, 2:], y_va[:, 2:], negative_mse)}
    lambdas = (0.01, 0.1, 1.0, 10.0)
    reference, r_hist = RidgeSolver(x_tr, max_dim=90, dtype=torch.float64, form="primal").fit_heads(
        heads, x_va, lambdas)
    dual, d_hist = RidgeSolver(x_tr, max_dim=90, form="dual").fit_heads(heads, x_va, lambdas)
    for name in heads:
        assert d_hist[f"{name}.lambda"] == r_hist[f"{name}.lambda"]
        torch.testing.assert_close(torch.tensor(d_hist[f"{name}.val_score"]),
                                   torch.tensor(r_hist[f"{name}.val_score"]), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(dual[name](x_va), reference[name](x_va), rtol=1e-4, atol=1e-4)


def test_auto_form_is_dual_only_when_wide_and_short(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not RidgeSolver(torch.randn(32, 64)).dual  # narrow probes keep the primal (and their numbers)
    monkeypatch.setattr(training, "DUAL_MIN_DIM", 64)  # the rule, at a size that runs in milliseconds
    assert RidgeSolver(torch.randn(32, 64)).dual
    assert not RidgeSolver(torch.randn(64, 63)).dual
    assert not RidgeSolver(torch.randn(32, 63)).dual


def test_dual_reconstructs_wide_pixel_cells_exactly() -> None:
    """Known answer: a token is its own cell's pixels (2,400 values, more than the 120 training rows),
    so the best map is the identity. Images are made of 12 patterns, so the test cells lie in the span
    of the training cells and the ridge at λ → 0 must give them back exactly."""
    g = torch.Generator().manual_seed(3)
    patterns = torch.rand(12, 2400, generator=g, dtype=torch.float64)

    def cells(m: int) -> torch.Tensor:
        return torch.softmax(torch.randn(m, 12, generator=g, dtype=torch.float64), 1) @ patterns

    x_tr, x_va, x_te = cells(120), cells(40), cells(40)
    solver = RidgeSolver(x_tr.float(), max_dim=2400, dtype=torch.float64)
    assert solver.dual
    head, history = solver.fit(x_tr, x_va.float(), x_va, negative_mse, tuple(10.0**k for k in range(-9, 1)))
    assert history["lambda"][max(range(10), key=lambda i: history["val_score"][i])] <= 1e-6
    torch.testing.assert_close(head(x_te.float()), x_te.float(), rtol=0, atol=2e-4)


@pytest.mark.parametrize(("form", "n", "d", "max_dim", "via_basis"),
                         [("primal", 80, 30, 30, True), ("dual", 40, 90, 90, True), ("primal", 400, 30, 30, False),
                          ("primal", 80, 300, 50, True)])
def test_lambda_path_scores_equal_each_lambdas_own_map(form: str, n: int, d: int, max_dim: int, via_basis: bool,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The λ path scores val in the eigenbasis where that is cheaper (else by each λ's map, as before);
    each score must be what the map at that λ gives on val, and the map returned is the chosen λ's. The
    third case has many val rows for few outputs (the direct path); the last goes through the random
    projection (d > max_dim)."""
    projected: list[int] = []
    original = RidgeSolver._val_basis
    monkeypatch.setattr(RidgeSolver, "_val_basis", lambda self, x: projected.append(1) or original(self, x))
    x_tr, x_va, y_tr, y_va = _problem(n=n, d=d, k=4, seed=2)
    lambdas = tuple(10.0**k for k in range(-4, 2))
    solver = RidgeSolver(x_tr, max_dim=max_dim, dtype=torch.float64, form=form)  # type: ignore[arg-type]
    head, history = solver.fit(y_tr, x_va, y_va, negative_mse, lambdas)
    q, y_mean = solver._cross(y_tr)
    maps = [solver._weights(q, y_mean, lam) for lam in lambdas]
    expected = [negative_mse(m(x_va), y_va) for m in maps]
    torch.testing.assert_close(torch.tensor(history["val_score"]), torch.tensor(expected), rtol=1e-5, atol=1e-7)
    chosen = maps[int(torch.tensor(expected).argmax())]
    assert torch.equal(head.weight, chosen.weight) and torch.equal(head.bias, chosen.bias)
    assert bool(projected) == via_basis
