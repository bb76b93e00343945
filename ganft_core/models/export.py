"""`model.pt2`: a network as a `torch.export` program that loads without ganft.

`torch.export.load(path).module()` gives back a plain `torch.fx.GraphModule` of ATen ops: no class of
ours is referenced, so users need only torch. The program is exported in eval mode (noise and
dropout off, batch norm on running statistics), on CPU (it loads on machines without a GPU; move
it with `.to(device)` after loading), with a dynamic batch dimension.
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from ganft_core.errors import ModelError

MAX_BATCH = 1 << 16  # upper bound of the dynamic batch dimension


def export_program(module: nn.Module, example_input: torch.Tensor, path: Path | str) -> torch.export.ExportedProgram:
    """Export `module` (eval mode, CPU copy) for inputs shaped like `example_input`, and save it to `path`.

    The example's batch size does not matter (it is made dynamic). The saved program is checked
    against the module on the example before it replaces `path` (tmp + rename).
    """
    path = Path(path)
    with warnings.catch_warnings():  # copying an unlifted GraphModule trips a torch pytree deprecation notice
        warnings.simplefilter("ignore", FutureWarning)
        net = copy.deepcopy(module).to("cpu").eval()
    example = example_input.detach().to("cpu", torch.float32)
    if example.shape[0] < 2:  # torch.export specialises a batch of 1 to a constant
        example = example.expand(2, *example.shape[1:]).contiguous()
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        program = torch.export.export(net, (example,), dynamic_shapes=({0: batch},), strict=False)
    except Exception as e:  # torch raises many types here; the user needs one clear message
        raise ModelError(f"the model could not be exported with torch.export: {type(e).__name__}: {e}") from e
    with torch.no_grad():
        want = net(example)
        got = program.module()(example)
    if not torch.allclose(want, got, rtol=1e-4, atol=1e-5):
        raise ModelError("the exported program does not reproduce the model's outputs")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".pt2", dir=path.parent)
    os.close(fd)
    try:
        torch.export.save(program, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return program
