"""A text (GAN-BERT) job through the whole service: upload a text CSV over HTTP, POST an ssgan job, follow
its event stream, download model.pt2 and the tokenizer, predict without ganft; export a checkpoint as a model;
then a second job that starts from the first one's output model (the worker stages its tokenizer files with its
weights). And a user's encoder uploaded as a model, fine-tuned by a text job.

Tiny mode: a random 2-layer BERT (`architecture_arguments`), a few steps, 60 texts, so no 90 MB encoder loads.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import torch

from ganft.client import Client
from tests.e2e.conftest import Stack
from tests.e2e.flows import follow

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TINY = {"layers": 2, "hidden": 32, "heads": 2, "intermediate": 64}
GOOD = ["a great fun film", "a wonderful moving story", "brilliant acting and a smart script", "loved every minute"]
BAD = ["a dull boring mess", "terrible acting and a weak plot", "i hated this film", "a tedious waste of time"]
STEPS = 6


def write_reviews(path: Path, n: int, labeled: int, seed: int) -> list[tuple[str, str]]:
    """A text CSV of `n` reviews, the first `labeled` with a label (fresh/rotten); returns (text, class) of all."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        good = i % 2 == 0
        rows.append(
            (
                f"{rng.choice(GOOD if good else BAD)}, {rng.choice(['really', 'truly', 'honestly'])}",
                "fresh" if good else "rotten",
            )
        )
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["text", "label"])
        out.writerows((text, label if i < labeled else "") for i, (text, label) in enumerate(rows))
    return rows


def predict(folder: Path, texts: list[str]) -> torch.Tensor:
    """N×K logits from the downloaded model.pt2 and tokenizer.json, as the README's ganft-free example runs them."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.enable_truncation(16)
    tok.enable_padding()
    enc = tok.encode_batch(texts)
    ids, mask = torch.tensor([e.ids for e in enc]), torch.tensor([e.attention_mask for e in enc])
    with torch.no_grad():
        return torch.export.load(str(folder / "model.pt2")).module()(ids, mask)


def test_text_job_through_the_service(stack: Stack, tmp_path: Path) -> None:
    write_reviews(tmp_path / "train.csv", n=60, labeled=20, seed=1)
    val_rows = write_reviews(tmp_path / "val.csv", n=24, labeled=24, seed=2)
    hp = {
        "steps": STEPS,
        "batch_size": 8,
        "unlabeled_batch_size": 8,
        "eval_every": 3,
        "log_every": 1,
        "architecture_arguments": TINY,
        "text": {"max_length": 16},
    }
    with Client(stack.url, stack.key, timeout=60) as api:
        # ---- upload: the text format's stats, counted with the built-in tokenizer
        train = api.upload_dataset(tmp_path / "train.csv", format="text")
        val = api.upload_dataset(tmp_path / "val.csv", format="text")
        assert train["format"] == "text" and train["stats"]["labeled"] == 20 and train["stats"]["unlabeled"] == 40
        assert train["stats"]["classes"] == ["fresh", "rotten"] and train["stats"]["tokens"]["max"] <= 16

        # ---- a GAN-BERT job, followed over the event stream (SSE) to its end
        created = api.create_job(
            {
                "method": "ssgan",
                "dataset_id": train["id"],
                "validation_dataset_id": val["id"],
                "seed": 1,
                "hyperparameters": hp,
            }
        )
        job, events = follow(api, created["id"])
        assert job["status"] == "succeeded", job["error"]
        assert [e.data["step"] for e in events if e.type == "progress"][-1] == STEPS
        assert [e.data["step"] for e in events if e.type == "evaluation"] == [3, STEPS]
        assert job["output_model_id"] and job["progress"]["fraction"] == 1.0

        # ---- the artifacts: a text model, its tokenizer, the control's verdict, nearest texts; no sample grid
        names = {a.name for a in api.list_artifacts(job["id"])}
        assert {
            "model.pt2",
            "model.safetensors",
            "model.json",
            "tokenizer.json",
            "vocab.txt",
            "metrics.json",
            "nearest_texts.json",
            "control.pt2",
        } <= names
        assert "samples.png" not in names
        first = tmp_path / "first"
        first.mkdir()
        for name in ("model.pt2", "model.json", "tokenizer.json", "metrics.json"):
            api.download_artifact(job["id"], name, first / name)
        meta = json.loads((first / "model.json").read_text())
        metrics = json.loads((first / "metrics.json").read_text())
        assert meta["architecture"] == "minilm" and meta["input_layout"]["kind"] == "text"
        assert meta["class_names"] == ["fresh", "rotten"] and metrics["verdict"]["outcome"]
        assert job["result"]["ssgan"]["accuracy"] == metrics["ssgan"]["accuracy"]

        # ---- predict with the downloaded program: its accuracy is the reported one (ties aside)
        logits = predict(first, [text for text, _ in val_rows])
        assert logits.shape == (len(val_rows), 2) and torch.isfinite(logits).all()
        truth = torch.tensor([meta["class_names"].index(label) for _, label in val_rows])
        accuracy = float((logits.argmax(dim=1) == truth).float().mean())
        assert abs(accuracy - metrics["ssgan"]["accuracy"]) <= 1.0 / len(val_rows) + 1e-9
        few = predict(first, ["an utterly brilliant film", "a boring, tedious mess", "loved it"])
        assert few.shape == (3, 2)  # a class of model.json per sentence (a 6-step random BERT: no wiser)

        # ---- a checkpoint exported as a model: a fork that trains no further and writes the text outputs
        steps = [c.step for c in api.list_checkpoints(job["id"])]
        exported, _ = follow(api, api.export_checkpoint(job["id"], steps[0])["id"])
        assert exported["status"] == "succeeded", exported["error"]
        assert "tokenizer.json" in {a.name for a in api.list_artifacts(exported["id"])}

        # ---- a second job from the first one's output model: its tokenizer travels with its weights
        model = api.get_model(job["output_model_id"])
        assert model["role"] == "classifier" and model["config"]["architecture"] == "minilm"
        hp2 = {**hp, "steps": 2, "eval_every": 2, "run_control": False}
        hp2.pop("architecture_arguments")
        queued = api.create_job(
            {
                "method": "ssgan",
                "dataset_id": train["id"],
                "validation_dataset_id": val["id"],
                "base_model_id": model["id"],
                "seed": 2,
                "hyperparameters": hp2,
            }
        )
        second, _ = follow(api, queued["id"])
        assert second["status"] == "succeeded", second["error"]
        assert second["base_model_id"] == model["id"] and second["output_model_id"]
        again = tmp_path / "second"
        again.mkdir()
        for name in ("model.pt2", "tokenizer.json", "model.json"):
            api.download_artifact(second["id"], name, again / name)
        assert json.loads((again / "model.json").read_text())["arguments"]["layers"] == 2  # the base's shapes
        assert predict(again, ["a great fun film"]).shape == (1, 2)


def test_text_job_from_an_uploaded_encoder(stack: Stack, tmp_path: Path) -> None:
    """A user's BERT-family encoder (safetensors under Hugging Face names + tokenizer.json) uploaded as a model
    of role `encoder`; a text job fine-tunes it with a new head, and the output keeps its shapes and tokenizer."""
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel

    from ganft_core.data.text import builtin_encoder_dir

    torch.manual_seed(0)
    shapes = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    encoder = BertModel(shapes, add_pooling_layer=False)
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(tmp_path / "encoder.safetensors"))
    write_reviews(tmp_path / "train.csv", n=40, labeled=16, seed=3)
    val_rows = write_reviews(tmp_path / "val.csv", n=12, labeled=12, seed=4)
    config = {"architecture": "minilm", "role": "encoder", "arguments": TINY, "input_layout": {"kind": "text"}}
    with Client(stack.url, stack.key, timeout=60) as api:
        model = api.upload_model(
            config, weights=tmp_path / "encoder.safetensors", tokenizer=builtin_encoder_dir() / "tokenizer.json"
        )
        assert model["role"] == "encoder"
        train = api.upload_dataset(tmp_path / "train.csv", format="text")
        val = api.upload_dataset(tmp_path / "val.csv", format="text")
        hp = {"steps": 2, "batch_size": 8, "unlabeled_batch_size": 8, "eval_every": 2, "text": {"max_length": 16}}
        created = api.create_job(
            {
                "method": "ssgan",
                "dataset_id": train["id"],
                "validation_dataset_id": val["id"],
                "base_model_id": model["id"],
                "seed": 1,
                "hyperparameters": hp,
            }
        )
        job, _ = follow(api, created["id"])
        assert job["status"] == "succeeded", job["error"]
        for name in ("model.pt2", "model.json", "tokenizer.json", "metrics.json"):
            api.download_artifact(job["id"], name, tmp_path / name)
        meta = json.loads((tmp_path / "model.json").read_text())
        assert meta["arguments"]["hidden"] == 32 and meta["arguments"]["num_classes"] == 2
        assert (
            "encoder: the uploaded BERT encoder, mean pooling"
            in json.loads((tmp_path / "metrics.json").read_text())["notes"]
        )
        assert predict(tmp_path, [text for text, _ in val_rows]).shape == (len(val_rows), 2)
