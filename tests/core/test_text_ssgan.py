"""GAN-BERT (ssgan on text): tiny-mode training (a random 2-layer BERT), resume equality, outputs, export/reload
of model.pt2 with identical logits, the README's ganft-free example, base models, and a real-encoder smoke test."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from safetensors.torch import load_file, save_file

from ganft_core.config import SsganHyperparameters, TrainSpec
from ganft_core.data import load_dataset
from ganft_core.data.text import TextDataset, builtin_encoder_dir
from ganft_core.errors import Aborted, ModelError, SpecError
from ganft_core.models.io import load_model
from ganft_core.run import load_checkpoint
from ganft_core.text_nets import Tokens, build_text_classifier
from ganft_core.train import RunResult, train

os.environ.setdefault("HF_HUB_OFFLINE", "1")
README = Path(__file__).resolve().parents[2] / "README.md"
TINY = {"layers": 2, "hidden": 32, "heads": 2, "intermediate": 64}  # a random BERT: no 90 MB encoder in tests
POSITIVE = ["a great fun film", "a wonderful moving story", "brilliant acting and a smart script", "loved it"]
NEGATIVE = ["a dull boring mess", "terrible acting and a weak plot", "i hated this film", "a tedious waste"]


def reviews(path: Path, n: int = 80, labeled: int = 24) -> Path:
    rng = random.Random(0)
    rows = []
    for i in range(n):
        good = i % 2 == 1
        text = f"{rng.choice(POSITIVE if good else NEGATIVE)} {rng.choice(['indeed', 'really', 'truly', 'sadly'])}"
        rows.append({"text": text, "label": ("pos" if good else "neg") if i < labeled else None})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def tiny_spec(**overrides: Any) -> TrainSpec:
    hp = {
        "steps": 4,
        "batch_size": 8,
        "unlabeled_batch_size": 8,
        "eval_every": 2,
        "checkpoint_every": 2,
        "log_every": 1,
        "keep_checkpoints": 5,
        "deterministic": True,
        "architecture_arguments": TINY,
        **overrides,
    }
    return TrainSpec.model_validate({"method": "ssgan", "seed": 3, "hyperparameters": hp})


def train_text(spec: TrainSpec, data: TextDataset, out: Path, **kw: Any) -> RunResult:
    """`train` on a text dataset (its `data: Dataset` annotation predates TextDataset, which it dispatches on)."""
    return train(spec, cast(Any, data), out, **kw)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> TextDataset:
    ds = load_dataset(reviews(tmp_path_factory.mktemp("text") / "reviews.jsonl"))
    assert isinstance(ds, TextDataset)
    return ds


@pytest.fixture(scope="module")
def tiny_run(data: TextDataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("run")
    updates: list[Any] = []
    result = train_text(tiny_spec(), data, out, progress=updates.append, device="cpu")
    return out, result


def test_tiny_run_writes_the_outputs(tiny_run: tuple[Path, Any]) -> None:
    out, result = tiny_run
    for name in (
        "model.safetensors",
        "model.json",
        "model.pt2",
        "control.safetensors",
        "control.pt2",
        "tokenizer.json",
        "vocab.txt",
        "generator.safetensors",
        "nearest_texts.json",
        "metrics.json",
    ):
        assert name in result.artifacts and (out / name).is_file(), name
    assert "samples.png" not in result.artifacts  # no sample grid for text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"] == "text" and metrics["class_names"] == ["neg", "pos"]
    for run in ("ssgan", "control"):
        figures = metrics[run]
        wanted = {"accuracy", "macro_precision", "macro_recall", "macro_f1", "per_class", "confusion_matrix"}
        assert wanted <= set(figures)
        assert sum(map(sum, figures["confusion_matrix"])) == metrics["validation_examples"]
    assert metrics["verdict"]["outcome"] in ("helped", "no_difference", "hurt")
    meta = json.loads((out / "model.json").read_text())
    assert meta["architecture"] == "minilm" and meta["arguments"]["layers"] == 2
    assert meta["input_layout"] == {"kind": "text", "max_length": 64, "tokenizer": "tokenizer.json"}
    near = json.loads((out / "nearest_texts.json").read_text())
    assert len(near["samples"]) == 8
    for sample in near["samples"]:
        assert 0.0 <= sample["d_real_probability"] <= 1.0 and sample["predicted_class"] in ("neg", "pos")
        texts = [n["text"] for n in sample["nearest"]]
        assert len(texts) == 3 and len(set(texts)) == 3
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["event"] == "evaluation"] == [2, 4]


def test_exported_program_reloads_with_identical_logits(tiny_run: tuple[Path, Any], data: TextDataset) -> None:
    out, _ = tiny_run
    net, _meta = load_model(out)
    net.eval()
    program = torch.export.load(str(out / "model.pt2")).module()
    tokens = Tokens.of(data.texts, out, 64)
    for rows, width in ((list(range(5)), None), ([7], None), (list(range(3, 40)), 4)):
        ids, mask = tokens.batch(torch.tensor(rows), width)
        with torch.no_grad():
            assert torch.equal(program(ids, mask), net(ids, mask)), (rows, width)


def test_readme_example_runs_without_ganft(tiny_run: tuple[Path, Any]) -> None:
    out, _ = tiny_run
    block = re.search(r"<!-- text-pt2-example -->\n```python\n(.*?)```", README.read_text(), flags=re.S)
    assert block, "README.md has no text model.pt2 example"
    check = "\nimport sys\nassert not any(m.startswith('ganft') for m in sys.modules)\nprint(logits.shape)\n"
    code = block.group(1) + check
    done = subprocess.run([sys.executable, "-c", code], cwd=out, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("torch.Size([2, 2])")


def test_resume_equals_the_uninterrupted_run(tiny_run: tuple[Path, Any], data: TextDataset, tmp_path: Path) -> None:
    out, _ = tiny_run
    calls = {"n": 0}

    def abort_at_step_2() -> bool:
        calls["n"] += 1
        return calls["n"] == 3  # polled before steps 0, 1, 2

    with pytest.raises(Aborted, match="stopped at step 2"):
        train_text(tiny_spec(), data, tmp_path, should_abort=abort_at_step_2, device="cpu")
    assert not (tmp_path / "model.safetensors").exists()
    train_text(tiny_spec(), data, tmp_path, device="cpu")
    straight, resumed = (load_checkpoint(p / "checkpoints" / "ckpt-00000004.pt") for p in (out, tmp_path))
    for net in ("classifier", "generator", "control"):
        for key, value in straight[net].items():
            assert torch.equal(value, resumed[net][key]), f"{net}.{key}"
    assert load_file(out / "model.safetensors").keys() == load_file(tmp_path / "model.safetensors").keys()
    assert (
        json.loads((out / "metrics.json").read_text())["ssgan"]
        == json.loads((tmp_path / "metrics.json").read_text())["ssgan"]
    )


def test_a_finished_model_is_a_base_model(tiny_run: tuple[Path, Any], data: TextDataset) -> None:
    out, _ = tiny_run
    clf = build_text_classifier(SsganHyperparameters(), data, out)
    reference, _ = load_model(out)
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in clf.net.state_dict().items())
    assert clf.tokenizer_dir == out


def test_a_users_bert_encoder_is_loaded_and_checked(data: TextDataset, tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    encoder = BertModel(config)
    (tmp_path / "config.json").write_text(config.to_json_string())
    state = {f"bert.{k}": v.contiguous() for k, v in encoder.state_dict().items()}  # as BertFor... saves them
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "tokenizer.json").write_bytes((builtin_encoder_dir() / "tokenizer.json").read_bytes())
    clf = build_text_classifier(SsganHyperparameters(), data, tmp_path)
    mine = clf.net.encoder.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in encoder.state_dict().items() if k in mine)
    assert clf.net.head.out_features == 2
    torch.save(state, tmp_path / "model.safetensors")  # a pickle under the safetensors name
    with pytest.raises(ModelError, match="pickle|zip"):
        build_text_classifier(SsganHyperparameters(), data, tmp_path)


def test_an_uploaded_encoder_is_loaded_and_checked(data: TextDataset, tmp_path: Path) -> None:
    """The folder POST /v1/models writes for role `encoder`: model.json (MiniLMArgs), HF-named weights, tokenizer."""
    from transformers import BertConfig, BertModel

    encoder = BertModel(
        BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
        add_pooling_layer=False,
    )
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(tmp_path / "model.safetensors"))
    meta = {
        "architecture": "minilm",
        "role": "encoder",
        "arguments": TINY,
        "class_names": [],
        "input_layout": {"kind": "text"},
    }
    (tmp_path / "model.json").write_text(json.dumps(meta))
    (tmp_path / "tokenizer.json").write_bytes((builtin_encoder_dir() / "tokenizer.json").read_bytes())
    clf = build_text_classifier(SsganHyperparameters(), data, tmp_path)
    mine = clf.net.encoder.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in encoder.state_dict().items() if k in mine)
    assert clf.net.head.out_features == 2 and clf.tokenizer_dir == tmp_path
    assert "uploaded BERT encoder" in clf.notes[0]
    (tmp_path / "model.json").write_text(json.dumps({**meta, "arguments": {**TINY, "vocab_size": 1000}}))
    with pytest.raises(ModelError, match="does not fit the encoder"):  # the weights' vocabulary is 30522
        build_text_classifier(SsganHyperparameters(), data, tmp_path)
    small = BertModel(
        BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
        add_pooling_layer=False,
    )
    save_file({k: v.contiguous() for k, v in small.state_dict().items()}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ModelError, match="tokenizer.json has 30522 tokens"):  # ids past the embedding table
        build_text_classifier(SsganHyperparameters(), data, tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({**meta, "arguments": {"bogus": 1}}))
    with pytest.raises(ModelError, match="unknown argument 'bogus'"):
        build_text_classifier(SsganHyperparameters(), data, tmp_path)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [({"architecture": "resnet18"}, "architecture"), ({"early_stopping": {"patience": 2}}, "early_stopping")],
)
def test_spec_errors(data: TextDataset, tmp_path: Path, overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as e:
        train_text(tiny_spec(**overrides), data, tmp_path, device="cpu")
    assert field in (e.value.field or "")


@pytest.mark.slow
def test_real_encoder_smoke(data: TextDataset, tmp_path: Path) -> None:
    """The built-in all-MiniLM-L6-v2: mean-pooled vectors mean something, and a short run trains and exports."""
    clf = build_text_classifier(SsganHyperparameters(), data, None)
    assert "all-MiniLM-L6-v2 (built-in)" in clf.notes[0]
    net = clf.net.eval()
    tokens = Tokens.of(["a great film", "an excellent movie", "the stock market fell sharply"], clf.tokenizer_dir, 64)
    with torch.no_grad():
        v = torch.nn.functional.normalize(net.sentence(*tokens.batch(torch.arange(3))), dim=1)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.2
    spec = TrainSpec.model_validate(
        {
            "method": "ssgan",
            "seed": 1,
            "hyperparameters": {
                "steps": 2,
                "batch_size": 4,
                "unlabeled_batch_size": 4,
                "freeze_blocks": 6,
                "ema_decay": 0.0,
            },
        }
    )
    result = train_text(spec, data, tmp_path, device="cpu")
    assert "model.pt2" in result.artifacts
    assert any("cached" in n for n in result.metrics["notes"])
