"""Early stopping in both methods: the run stops after `patience` evaluations without improvement, its
outputs are the best evaluated step's weights (not the last), it says why, and a resumed run stops alike."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from ganft_core.config import EarlyStopping, TrainSpec
from ganft_core.early_stop import EarlyStopper
from ganft_core.errors import Aborted, SpecError
from ganft_core.run import checkpoint_path, load_checkpoint
from ganft_core.train import train
from tests.core.test_adapt import (
    _digits,
    evaluator,  # noqa: F401 - the module-scoped fixture
)
from tests.core.test_adapt import _spec as adapt_spec
from tests.core.test_ssgan import blobs, spec

# min_delta 1.0 on an accuracy in [0, 1]: no evaluation after the first can improve, so the run stops
# exactly `patience` evaluations after the first one, whatever it learns.
NO_GAIN_COUNTS = {"patience": 2, "min_delta": 1.0}


@pytest.fixture(autouse=True)
def one_thread_and_reset_determinism() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
    torch.use_deterministic_algorithms(False)


def ssgan_run(out: Path, **kwargs: Any) -> Any:
    hp = spec(
        steps=200,
        eval_every=5,
        checkpoint_every=5,
        keep_checkpoints=1000,
        ema_decay=0.9,
        deterministic=True,
        early_stopping=NO_GAIN_COUNTS,
    )
    return train(hp, blobs(20, 5), out, validation=blobs(6, 6, seed=1), **kwargs)


def test_ssgan_stops_after_patience_with_the_best_steps_weights(tmp_path: Path) -> None:
    result = ssgan_run(tmp_path)
    m = result.metrics
    assert m["stopped_early"] is True
    es = m["early_stopping"]
    assert es["best_step"] == 5 and es["stopped_at_step"] == 15 and es["patience"] == 2
    assert "did not improve" in m["stop_reason"] and "step 5" in m["stop_reason"]
    assert not checkpoint_path(tmp_path, 20).exists()  # it really stopped at 15 of 200
    saved = load_file(str(tmp_path / "model.safetensors"))
    best = load_checkpoint(checkpoint_path(tmp_path, 5))["ema"]["module"]
    last = load_checkpoint(checkpoint_path(tmp_path, 15))["ema"]["module"]
    assert all(torch.equal(saved[k], v) for k, v in best.items())
    assert not all(torch.equal(saved[k], v) for k, v in last.items())
    control = load_file(str(tmp_path / "control.safetensors"))
    best_control = load_checkpoint(checkpoint_path(tmp_path, 5))["ema_control"]["module"]
    assert all(torch.equal(control[k], v) for k, v in best_control.items())
    assert m["ssgan"]["accuracy"] == es["best_value"]  # the figures are the best evaluation's


def test_ssgan_early_stopping_survives_a_resume(tmp_path: Path) -> None:
    ssgan_run(tmp_path / "straight")
    polls = {"n": 0}

    def abort_at_12() -> bool:
        polls["n"] += 1
        return polls["n"] == 13  # after the evaluations at 5 and 10, before the one that stops the run

    with pytest.raises(Aborted):
        ssgan_run(tmp_path / "resumed", should_abort=abort_at_12)
    result = ssgan_run(tmp_path / "resumed")
    assert result.metrics["early_stopping"]["stopped_at_step"] == 15
    for stem in ("model", "control", "generator"):
        a, b = (load_file(str(tmp_path / run / f"{stem}.safetensors")) for run in ("straight", "resumed"))
        assert all(torch.equal(a[k], b[k]) for k in a), stem


def test_a_run_that_keeps_improving_runs_all_its_steps() -> None:
    stopper = EarlyStopper(EarlyStopping(patience=2), metric="fid", higher_is_better=False)
    for step, fid in enumerate([50.0, 40.0, 41.0, 39.0, 39.0]):
        stopper.observe(step, fid, lambda: {})
    assert not stopper.stopped and stopper.best_step == 3  # of equals the earliest stays the best
    stopper.observe(5, float("nan"), lambda: {})
    assert stopper.stopped and stopper.summary(5, 10)["stopped_early"]


def test_adapt_stops_on_fid_with_the_best_steps_generator(tmp_path: Path, evaluator: Path) -> None:  # noqa: F811
    hp = adapt_spec(steps=30, early_stopping={"patience": 1, "min_delta": 1000.0})
    result = train(hp, _digits(range(5), 40), tmp_path, evaluator=evaluator, device="cpu")
    m = result.metrics
    assert m["stopped_early"] and m["early_stopping"]["best_step"] == 3
    assert m["early_stopping"]["stopped_at_step"] == 6 and not checkpoint_path(tmp_path, 9).exists()
    assert m["fid"] == m["history"][0]["fid"]  # the figures of the weights written: step 3's
    saved = load_file(str(tmp_path / "model.safetensors"))
    best = load_checkpoint(checkpoint_path(tmp_path, 3))["G_ema"]["module"]
    assert all(torch.equal(saved[k], v) for k, v in best.items())


def test_adapt_early_stopping_needs_fid(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        train(adapt_spec(early_stopping={"patience": 2}), _digits(range(5), 40), tmp_path, device="cpu")
    assert caught.value.field == "hyperparameters.early_stopping"


@pytest.mark.parametrize("bad", [{"patience": 0}, {}, {"patience": 2, "min_delta": -1}, {"patience": 2, "x": 1}])
def test_bad_early_stopping_is_rejected_naming_the_field(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        TrainSpec.model_validate({"method": "ssgan", "hyperparameters": {"early_stopping": bad}})
    assert caught.value.errors()[0]["loc"][:2] == ("hyperparameters", "early_stopping")
