"""Checkpoints and resume: run-folder helpers, and bit-identical ssgan weights after an interruption."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ganft_core import run, ssgan
from ganft_core.errors import Aborted, NanLossError
from ganft_core.train import AbortFn, train
from tests.core.test_ssgan import blobs, spec

OUTPUTS = ("model", "control", "generator")


@pytest.fixture(autouse=True)
def one_thread_and_reset_determinism() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
    torch.use_deterministic_algorithms(False)  # deterministic runs switch it on process-wide


def run_to_end(out: Path, should_abort: AbortFn | None = None) -> None:
    hp = spec(steps=30, deterministic=True, ema_decay=0.9, checkpoint_every=10, eval_every=15)
    train(hp, blobs(20, 5), out, validation=blobs(6, 6, seed=1), should_abort=should_abort)


def _latest_name(out: Path) -> str:
    latest = run.latest_checkpoint(out)
    assert latest is not None, f"no checkpoint in {out}"
    return latest.name


def assert_same_weights(a: Path, b: Path) -> None:
    for stem in OUTPUTS:
        wa, wb = load_file(str(a / f"{stem}.safetensors")), load_file(str(b / f"{stem}.safetensors"))
        assert wa.keys() == wb.keys()
        for key in wa:
            assert torch.equal(wa[key], wb[key]), f"{stem}.{key}"


def test_aborted_then_resumed_run_ends_bit_identical(tmp_path: Path) -> None:
    run_to_end(tmp_path / "straight")
    polls = {"n": 0}

    def abort_at_13() -> bool:
        polls["n"] += 1
        return polls["n"] == 14  # polled before each step: steps 0..12 run, then stop at 13

    with pytest.raises(Aborted):
        run_to_end(tmp_path / "interrupted", should_abort=abort_at_13)
    assert _latest_name(tmp_path / "interrupted") == "ckpt-00000013.pt"
    run_to_end(tmp_path / "interrupted")
    assert_same_weights(tmp_path / "straight", tmp_path / "interrupted")


def test_crash_resumes_from_the_last_periodic_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_to_end(tmp_path / "straight")
    real = ssgan.feature_matching_loss
    calls = {"n": 0}

    def crash_at_step_17(f_real: torch.Tensor, f_fake: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 17:
            raise RuntimeError("worker lost")
        return real(f_real, f_fake)

    monkeypatch.setattr(ssgan, "feature_matching_loss", crash_at_step_17)
    with pytest.raises(RuntimeError, match="worker lost"):
        run_to_end(tmp_path / "crashed")
    monkeypatch.setattr(ssgan, "feature_matching_loss", real)
    assert _latest_name(tmp_path / "crashed") == "ckpt-00000010.pt"
    run_to_end(tmp_path / "crashed")  # steps 10..30 again, from the checkpoint
    assert_same_weights(tmp_path / "straight", tmp_path / "crashed")


def test_checkpoints_are_atomic_ordered_and_pruned(tmp_path: Path) -> None:
    for step in (5, 100, 20, 7):
        run.save_checkpoint(tmp_path, step, {"w": torch.full((2,), float(step))}, keep_last=3)
    names = [p.name for p in run.list_checkpoints(tmp_path)]
    assert names == ["ckpt-00000007.pt", "ckpt-00000020.pt", "ckpt-00000100.pt"]
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))
    (tmp_path / "checkpoints" / "ckpt-00000200.pt.tmp").write_bytes(b"half written")
    latest = run.latest_checkpoint(tmp_path)
    assert latest is not None and torch.equal(run.load_checkpoint(latest)["w"], torch.full((2,), 100.0))
    assert run.latest_checkpoint(tmp_path / "empty") is None


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    sampler = torch.Generator().manual_seed(1)
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    state = run.capture_rng_state(sampler)
    draw = lambda: (  # noqa: E731
        random.random(),
        random.gauss(0, 1),
        np.random.rand(),
        torch.rand(3),
        torch.randint(9, (4,), generator=sampler),
    )
    first = draw()
    path = run.save_checkpoint(tmp_path, 1, {"rng": state})
    run.restore_rng_state(run.load_checkpoint(path)["rng"], sampler)
    second = draw()
    assert first[:3] == second[:3]
    assert torch.equal(first[3], second[3]) and torch.equal(first[4], second[4])


def test_nan_guard_names_the_bad_value() -> None:
    assert run.ensure_finite({"loss_d": torch.tensor(0.5), "lr": 0.1}, step=3) == {"loss_d": 0.5, "lr": 0.1}
    with pytest.raises(NanLossError, match="loss_g became inf at step 9"):
        run.ensure_finite({"loss_d": torch.tensor(1.0), "loss_g": torch.tensor(float("inf"))}, step=9)
    net = torch.nn.Linear(2, 2)
    run.ensure_finite_weights({"classifier": net}, step=1)
    with torch.no_grad():
        net.weight[0, 0] = float("nan")
    with pytest.raises(NanLossError, match="classifier"):
        run.ensure_finite_weights({"classifier": net}, step=1)


def test_ema_warms_up_then_follows_the_decay() -> None:
    net = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema = run.Ema(net, decay=0.99)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update(net)  # first update: decay min(0.99, 1/10) = 0.1
    assert isinstance(ema.module, torch.nn.Linear) and ema.module.weight.item() == pytest.approx(0.9)
    restored = run.Ema(net, decay=0.99)
    restored.load_state_dict(ema.state_dict())
    assert isinstance(restored.module, torch.nn.Linear)
    assert restored.num_updates == 1 and restored.module.weight.item() == pytest.approx(0.9)
