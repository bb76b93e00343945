"""torch.export of our networks: model.pt2 loads with plain torch, without ganft, and predicts the same."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from ganft_core.errors import ModelError
from ganft_core.models import registry
from ganft_core.models.export import export_program

# (name, args, one example's input shape)
NETS: list[tuple[str, dict[str, Any], tuple[int, ...]]] = [
    ("mlp", {"in_shape": [1, 8, 8], "num_classes": 10, "hidden": [32, 16], "mean": [0.3], "std": [0.2]}, (1, 8, 8)),
    ("convnet", {"in_channels": 3, "num_classes": 4, "widths": [4, 8], "dropout": 0.3}, (3, 12, 12)),
    ("resnet18", {"num_classes": 3, "in_channels": 1, "small_input": True}, (1, 16, 16)),
    ("dcgan_g", {"z_dim": 8, "resolution": 32, "channels": 3, "width": 4}, (8,)),
    ("mlp_g", {"z_dim": 8, "out_shape": [1, 8, 8], "hidden": [16]}, (8,)),
    ("dcgan_d", {"resolution": 32, "channels": 3, "width": 4, "norm": "spectral"}, (3, 32, 32)),
]

# Runs in a fresh interpreter, outside the repository, with ganft made unimportable (the package
# is installed in editable mode, so a clean PYTHONPATH alone would not hide it).
FRESH_LOAD = """
import sys
for name in ("ganft_core", "ganft", "api", "worker"):
    sys.modules[name] = None  # any import of ours now fails
import torch
inputs = torch.load(sys.argv[1], weights_only=True)
outputs = {}
for key, x in inputs.items():
    program = torch.export.load(key + ".pt2").module()
    with torch.no_grad():
        outputs[key] = program(x)
assert not [m for m in sys.modules if m.startswith("ganft") and sys.modules[m] is not None]
torch.save(outputs, sys.argv[2])
"""


def run_fresh(workdir: Path, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Run each `workdir/<key>.pt2` on `inputs[key]` in a fresh process and return the outputs."""
    torch.save(inputs, workdir / "inputs.pt")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    subprocess.run(
        [sys.executable, "-I", "-c", textwrap.dedent(FRESH_LOAD), "inputs.pt", "outputs.pt"],
        cwd=workdir,
        env=env,
        check=True,
        timeout=300,
        capture_output=True,
    )
    return torch.load(workdir / "outputs.pt", weights_only=True)


def test_exported_programs_load_without_ganft_and_agree(tmp_path: Path) -> None:
    torch.manual_seed(0)
    inputs, expected = {}, {}
    for i, (name, args, shape) in enumerate(NETS):
        net = registry.build(name, args)
        net.train()  # the exported program must be the eval-mode net whatever mode the module is in
        export_program(net, torch.rand(2, *shape), tmp_path / f"{i}-{name}.pt2")
        assert net.training
        for batch in (1, 5):
            x = torch.rand(batch, *shape)
            key = f"{i}-{name}" if batch == 1 else f"{i}-{name}-b{batch}"
            if batch != 1:
                (tmp_path / f"{key}.pt2").symlink_to(tmp_path / f"{i}-{name}.pt2")
            inputs[key] = x
            with torch.no_grad():
                expected[key] = net.eval()(x)
            net.train()
    got = run_fresh(tmp_path, inputs)
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-5, msg=key)


def test_export_of_a_batch_of_one_is_still_dynamic(tmp_path: Path) -> None:
    net = registry.build("mlp", {"in_shape": [3], "num_classes": 2, "hidden": [4]}).eval()
    program = export_program(net, torch.rand(1, 3), tmp_path / "model.pt2")
    loaded = torch.export.load(tmp_path / "model.pt2").module()
    x = torch.rand(9, 3)
    torch.testing.assert_close(loaded(x), net(x))
    torch.testing.assert_close(program.module()(x[:1]), net(x[:1]))


def test_export_failure_is_a_model_error(tmp_path: Path) -> None:
    class DataDependent(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x if x.sum() > 0 else -x  # Python control flow on values cannot be traced

    with pytest.raises(ModelError, match="could not be exported"):
        export_program(DataDependent(), torch.rand(2, 3), tmp_path / "model.pt2")
    assert not list(tmp_path.iterdir())
