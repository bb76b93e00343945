"""FID, KID and the Inception-v3 feature network."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

from ganft_core.errors import ModelError
from ganft_core.fid import FeatureStats, frechet_distance, kernel_inception_distance, load_evaluator
from ganft_core.inception import InceptionV3Features, load_inception

if TYPE_CHECKING:
    from ganft_core.models.convnet import ConvNet


def _gaussian(n: int, d: int, shift: float = 0.0, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * scale + shift


def test_fid_of_a_set_with_itself_is_zero() -> None:
    s = FeatureStats.of(_gaussian(500, 16))
    assert frechet_distance(s.mu, s.sigma, s.mu, s.sigma) == pytest.approx(0.0, abs=1e-8)


def test_fid_matches_the_closed_form_for_diagonal_gaussians() -> None:
    # For diagonal covariances: FID = |mu1 - mu2|² + Σ (sqrt(a_i) - sqrt(b_i))²
    mu1, mu2 = torch.zeros(4, dtype=torch.float64), torch.tensor([1.0, 0.0, 2.0, 0.0], dtype=torch.float64)
    a, b = torch.tensor([1.0, 4.0, 9.0, 0.25]), torch.tensor([4.0, 4.0, 1.0, 1.0])
    expected = 5.0 + float(((a.sqrt() - b.sqrt()) ** 2).sum())
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected, rel=1e-9)


def test_fid_handles_non_commuting_covariances() -> None:
    # (S1 S2)^½ is not symmetric here; compare with the trace of its square root via eigenvalues of S1 S2.
    g = torch.Generator().manual_seed(1)
    m1, m2 = torch.randn(5, 5, generator=g, dtype=torch.float64), torch.randn(5, 5, generator=g, dtype=torch.float64)
    s1, s2 = m1 @ m1.T + 0.1 * torch.eye(5), m2 @ m2.T + 0.1 * torch.eye(5)
    mu = torch.zeros(5, dtype=torch.float64)
    eig = torch.linalg.eigvals(s1 @ s2)  # real positive: similar to a PSD matrix
    expected = float(s1.trace() + s2.trace() - 2 * eig.real.clamp(min=0).sqrt().sum())
    assert frechet_distance(mu, s1, mu, s2) == pytest.approx(expected, rel=1e-8)


def test_fid_grows_with_a_shift() -> None:
    a = FeatureStats.of(_gaussian(800, 8, seed=1))
    b = FeatureStats.of(_gaussian(800, 8, seed=2))
    c = FeatureStats.of(_gaussian(800, 8, shift=1.0, seed=2))
    same = frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
    shifted = frechet_distance(a.mu, a.sigma, c.mu, c.sigma)
    assert same < 0.2
    assert shifted == pytest.approx(8.0, rel=0.1)  # |shift|² = 8 × 1²


def test_kid_is_near_zero_for_the_same_distribution_and_positive_otherwise() -> None:
    x, y = _gaussian(300, 8, seed=1), _gaussian(300, 8, seed=2)
    same = kernel_inception_distance(x, y, subsets=20, max_subset=200)
    other = kernel_inception_distance(x, _gaussian(300, 8, shift=0.5, seed=2), subsets=20, max_subset=200)
    assert abs(same) < 0.02  # unbiased: can be slightly negative
    assert other > 10 * max(abs(same), 1e-3)
    assert kernel_inception_distance(x, x, subsets=5) == pytest.approx(
        kernel_inception_distance(x, x, subsets=5)
    )  # seeded subsets: repeatable


def test_no_evaluator_means_no_fid() -> None:
    assert load_evaluator(evaluator=None, inception_weights=None) is None


def test_inception_has_the_torchvision_architecture() -> None:
    net = InceptionV3Features("fid")
    # torchvision's inception_v3 has 27,161,264 parameters; minus fc (2048×1000 + 1000) and AuxLogits (3,326,696)
    assert sum(p.numel() for p in net.parameters()) == 27_161_264 - 2_049_000 - 3_326_696
    keys = net.state_dict()
    assert keys["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert keys["Mixed_7c.branch3x3dbl_3b.bn.running_var"].shape == (384,)
    assert keys["Mixed_6e.branch7x7dbl_5.conv.weight"].shape == (192, 192, 1, 7)


def test_inception_weights_load_from_a_state_dict_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = {k: v for k, v in InceptionV3Features("fid").state_dict().items() if "num_batches" not in k}
    state["fc.weight"], state["fc.bias"] = torch.randn(1008, 2048), torch.zeros(1008)  # pt_inception's head
    path = tmp_path / "pt_inception.pth"
    torch.save(state, path)
    ev = load_evaluator(evaluator=None, inception_weights=path)
    assert ev is not None and "inception-v3 (fid" in ev.name
    feats = ev.features(torch.rand(2, 1, 16, 16))  # grey, small: repeated to RGB and resized to 299
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()
    loaded = load_inception(path)
    assert torch.equal(loaded.Mixed_7c.branch_pool.conv.weight, state["Mixed_7c.branch_pool.conv.weight"])

    state["fc.weight"] = torch.randn(1000, 2048)  # torchvision's head: standard pooling
    torch.save(state, path)
    assert load_inception(path).variant == "torchvision"


def test_bad_inception_file_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save({"fc.weight": torch.zeros(1008, 2048)}, path)
    with pytest.raises(ModelError, match="lacks"):
        load_inception(path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read"):
        load_inception(path)


def test_kid_equals_the_unbiased_mmd_formula() -> None:
    # One subset with m = n uses both sets whole (in some order, which the sums ignore).
    x, y = _gaussian(30, 3, seed=1), _gaussian(30, 3, shift=0.3, seed=2)

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a @ b.T / 3 + 1) ** 3

    kxx, kyy, kxy, m = k(x, x), k(y, y), k(x, y), 30
    expected = (kxx.sum() - kxx.trace() + kyy.sum() - kyy.trace()) / (m * (m - 1)) - 2 * kxy.mean()
    assert kernel_inception_distance(x, y, subsets=1) == pytest.approx(float(expected), rel=1e-10)


def _classifier(widths: list[int]) -> ConvNet:
    from ganft_core.models.convnet import ConvNet
    from tests.core.nets import build_as

    torch.manual_seed(0)
    return build_as(ConvNet, "convnet", {"in_channels": 1, "num_classes": 3, "widths": widths, "norm": "none"}).eval()


def test_classifier_folder_evaluator_uses_penultimate_features(tmp_path: Path) -> None:
    from ganft_core.models.io import meta_for, save_model

    net = _classifier([4, 8])
    layout = {"kind": "image", "channels": 1, "height": 8, "width": 8}
    save_model(net, meta_for(net, class_names=["a", "b", "c"], input_layout=layout), tmp_path)
    ev = load_evaluator(evaluator=tmp_path, inception_weights=None)
    assert ev is not None and ev.name.startswith("classifier convnet")
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(ev.features(x), net.features(x).double())
    assert ev.features(torch.rand(3, 3, 16, 16)).shape == (3, 8)  # RGB 16 px: made grey and resized to 8 px


def test_exported_program_evaluator(tmp_path: Path) -> None:
    import json

    from ganft_core.models.export import export_program

    net = _classifier([4, 8])
    export_program(net, torch.rand(2, 1, 8, 8), tmp_path / "model.pt2")
    (tmp_path / "model.json").write_text(json.dumps({"format": "program", "class_names": ["a", "b", "c"]}))
    ev = load_evaluator(evaluator=tmp_path, inception_weights=None)
    assert ev is not None and "program" in ev.name
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(ev.features(x), net.features(x).double(), rtol=1e-5, atol=1e-5)


def test_evaluator_must_be_an_image_classifier(tmp_path: Path) -> None:
    from ganft_core.models.io import meta_for, save_model
    from ganft_core.models.registry import build

    g = build("conv_g", {"z_dim": 4})
    save_model(g, meta_for(g), tmp_path)
    with pytest.raises(ModelError, match="image classifier"):
        load_evaluator(evaluator=tmp_path, inception_weights=None)
    with pytest.raises(ModelError, match="no model.json"):
        load_evaluator(evaluator=tmp_path / "missing", inception_weights=None)
