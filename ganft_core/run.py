"""Run-folder helpers shared by every training method (ssgan, adapt).

A run folder describes itself and only grows (STYLE.md 7-8):

    spec.json                     resolved spec + data summary       (write_spec)
    metrics.jsonl                 one JSON object per log/eval line  (append_metrics)
    checkpoints/ckpt-%08d.pt      state dicts + RNG + step           (save_checkpoint / latest_checkpoint)

Checkpoints hold only tensors and plain Python containers, are written to a temp file
and renamed, and load with `torch.load(weights_only=True)`: nothing is ever unpickled.
Also here: seeding and deterministic mode, RNG capture/restore, the NaN guard, EMA and
the autocast context, so both training loops behave the same way.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from ganft_core.errors import NanLossError

CHECKPOINT_DIR = "checkpoints"
_CKPT_RE = re.compile(r"^ckpt-(\d{8})\.pt$")


# ---------------------------------------------------------------- run folder files


def _jsonable(value: Any) -> Any:
    """Plain-JSON version of `value`: tensors/numpy become lists or numbers, NaN/inf become None."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().tolist()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` as indented strict JSON atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def write_spec(out_dir: Path, spec: Mapping[str, Any]) -> Path:
    """Write the resolved spec (all defaults filled in, plus a data summary) to `out_dir/spec.json`.

    Rewritten on resume with the same content; returns the path.
    """
    path = Path(out_dir) / "spec.json"
    write_json(path, spec)
    return path


def append_metrics(out_dir: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON object (one line) to `out_dir/metrics.jsonl`; NaN/inf are written as null."""
    line = json.dumps(_jsonable(record), allow_nan=False)
    with open(Path(out_dir) / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(line + "\n")


# ---------------------------------------------------------------- checkpoints


def checkpoint_path(out_dir: Path, step: int) -> Path:
    """`out_dir/checkpoints/ckpt-<step, 8 digits>.pt`."""
    return Path(out_dir) / CHECKPOINT_DIR / f"ckpt-{step:08d}.pt"


def save_checkpoint(out_dir: Path, step: int, state: Mapping[str, Any], *, keep_last: int | None = None) -> Path:
    """Atomically write `state` (state dicts, tensors, plain containers only) as the checkpoint of `step`.

    Written to a temp file in the same folder and renamed, so a crash never leaves a
    half-written checkpoint under a real name. `keep_last` (if set) deletes the oldest
    checkpoints beyond that many; the newest is always kept. Returns the checkpoint path.
    """
    path = checkpoint_path(out_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(dict(state), tmp)
    os.replace(tmp, path)
    if keep_last is not None and keep_last >= 1:
        for old in list_checkpoints(out_dir)[:-keep_last]:
            old.unlink(missing_ok=True)
    return path


def list_checkpoints(out_dir: Path) -> list[Path]:
    """All complete checkpoints of a run, oldest first (temp files are ignored)."""
    folder = Path(out_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest checkpoint of a run (highest step), or None when there is none."""
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True` (tensors and plain containers only)."""
    return torch.load(path, map_location=map_location, weights_only=True)


# ---------------------------------------------------------------- seeding and RNG


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed python `random`, numpy and torch (CPU + CUDA); optionally turn on deterministic algorithms.

    Deterministic mode makes CPU runs bit-exact (resume equality) and CUDA runs repeatable
    at some speed cost; `CUBLAS_WORKSPACE_CONFIG` must be set before cuBLAS initialises.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)


def capture_rng_state(*generators: torch.Generator) -> dict[str, Any]:
    """Every RNG state a run depends on, as weights_only-loadable values.

    torch CPU (+ every CUDA device when present), numpy's global MT19937, python `random`,
    and any extra `torch.Generator`s (e.g. the data sampler's), in the order given.
    """
    np_state = cast(tuple[Any, ...], np.random.get_state(legacy=True))  # ('MT19937', keys, pos, has_gauss, cached)
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_version, "internal": list(py_internal), "gauss_next": py_gauss},
        "generators": [g.get_state() for g in generators],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any], *generators: torch.Generator) -> None:
    """Inverse of `capture_rng_state`; pass the same extra generators in the same order."""
    torch.set_rng_state(state["torch"])
    np_s = state["numpy"]
    keys = np_s["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, np_s["pos"], np_s["has_gauss"], np_s["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    for gen, gen_state in zip(generators, state["generators"], strict=True):
        gen.set_state(gen_state)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- NaN guard


def ensure_finite(values: Mapping[str, torch.Tensor | float], step: int) -> dict[str, float]:
    """Return `values` as floats, or raise `NanLossError` naming the first non-finite one.

    Tensors are stacked and copied to the host in one go: call this only at log intervals
    and before a checkpoint (it is a host sync).
    """
    tensors = {n: v.detach().float().reshape(()) for n, v in values.items() if isinstance(v, torch.Tensor)}
    host = dict(zip(tensors, torch.stack(list(tensors.values())).cpu().tolist(), strict=True)) if tensors else {}
    floats = {n: host[n] if n in host else float(v) for n, v in values.items()}
    for name, value in floats.items():
        if not math.isfinite(value):
            raise NanLossError(
                f"{name} became {value} at step {step}; lower the learning rate or check the data scale. "
                "The last good checkpoint is kept."
            )
    return floats


def ensure_finite_weights(modules: Mapping[str, nn.Module | None], step: int) -> None:
    """Raise `NanLossError` when any parameter of the named modules holds NaN/inf (one host sync).

    Called before every checkpoint so that a poisoned state is never saved over a good one.
    """
    named = [(name, m) for name, m in modules.items() if m is not None and any(True for _ in m.parameters())]
    if not named:
        return
    flags = torch.stack([torch.stack([p.detach().isfinite().all() for p in m.parameters()]).all() for _, m in named])
    for (name, _), ok in zip(named, flags.cpu().tolist(), strict=True):
        if not ok:
            raise NanLossError(
                f"the weights of the {name} became NaN or infinite by step {step}; the last good checkpoint is kept"
            )


# ---------------------------------------------------------------- EMA


class Ema:
    """Exponential moving average of a module's parameters, kept in a separate eval copy.

    `update` blends with decay min(decay, (1 + n) / (10 + n)) after n updates, so early
    averages are not dominated by the random init (the warm-up used by TF's
    ExponentialMovingAverage `num_updates`). Buffers (e.g. batch-norm statistics) are copied.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        self.num_updates = 0

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Move the average towards `module`'s current weights (no host sync)."""
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        self.num_updates += 1
        ema_p: list[torch.Tensor] = list(self.module.parameters())
        cur_p: list[torch.Tensor] = [p.detach() for p in module.parameters()]
        torch._foreach_lerp_(ema_p, cur_p, 1.0 - decay)
        for b_ema, b in zip(self.module.buffers(), module.buffers(), strict=True):
            b_ema.copy_(b)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.num_updates = int(state["num_updates"])


# ---------------------------------------------------------------- device helpers


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA; a no-op elsewhere (the CPU path stays plain fp32)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def iter_trainable(module: nn.Module) -> Iterator[nn.Parameter]:
    """Parameters with `requires_grad` (what an optimizer should get after freezing)."""
    return (p for p in module.parameters() if p.requires_grad)
