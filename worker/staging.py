"""Moving files between the artifact store and a job's scratch run folder.

    <data_dir>/runs/<job_id>/inputs/   datasets, base model, evaluator (fetched from the store)
    <data_dir>/runs/<job_id>/out/      the core's run folder (docs/CONTRACTS.md)

Store layout of a job: `jobs/<id>/checkpoints/ckpt-*.pt` (the newest is kept),
`jobs/<id>/pictures/<stem>-<sha256 prefix>.png` (versions of the live pictures published while the
job runs, worker/pictures.py) and `jobs/<id>/artifacts/<name>` (the final set); the artifacts folder
is also the output model's `storage_prefix` (it holds model.* and generator.* / discriminator.*).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from ganft.repo.lifecycle import ArtifactRecord, ClaimedJob, OutputModel, StoredDataset, StoredModel
from ganft.store import COPY_CHUNK_BYTES, Store
from worker.child import ChildArgs

# Files a model folder may hold (ganft/repo/models.py, docs/CONTRACTS.md "base_model"). A text model
# (GAN-BERT's `minilm`) is used with the tokenizer it was trained with, kept beside its weights: the names
# are ganft_core.text_nets.TOKENIZER_FILES, listed here so that this process never imports torch.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
MODEL_FILES = (
    "model.json",
    "model.safetensors",
    "model.pt2",
    "generator.json",
    "generator.safetensors",
    "discriminator.json",
    "discriminator.safetensors",
    *TOKENIZER_FILES,
)
DATASET_SUFFIX = {"npz": ".npz", "csv": ".csv", "imagefolder": ".zip", "text": ".txt"}
CONTENT_TYPES = {
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
    ".png": "image/png",
    ".safetensors": "application/octet-stream",
    ".pt2": "application/zip",  # a torch.export archive is a zip file
    ".pt": "application/octet-stream",
    ".txt": "text/plain; charset=utf-8",  # a text model's vocab.txt
}


def checkpoint_key(job_id: str, name: str) -> str:
    return f"jobs/{job_id}/checkpoints/{name}"


def artifacts_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/artifacts"


def picture_key(job_id: str, name: str, sha256: str) -> str:
    """The key of one version of a live picture: named by its content, so it is never rewritten."""
    path = Path(name)
    return f"jobs/{job_id}/pictures/{path.stem}-{sha256[:16]}{path.suffix}"


def fetch(store: Store, key: str, dest: Path) -> Path:
    """Put the stored file `key` at `dest`: a hard link when the store is a local folder on the
    same filesystem (no copy, and a dataset deleted meanwhile stays readable), else a streamed copy."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    local = getattr(store, "local_path", None)
    if local is not None:
        try:
            os.link(local(key), dest)
            return dest
        except OSError:
            pass  # another filesystem, or links not allowed: copy
    tmp = dest.with_name(dest.name + ".part")
    with store.open_read(key) as src, open(tmp, "wb") as out:
        while chunk := src.read(COPY_CHUNK_BYTES):
            out.write(chunk)
    os.replace(tmp, dest)
    return dest


def _fetch_dataset(store: Store, dataset: StoredDataset, folder: Path, stem: str) -> str:
    if dataset.storage_key is None:
        raise FileNotFoundError(f"dataset {dataset.id} has no stored file (its upload did not complete)")
    return str(fetch(store, dataset.storage_key, folder / f"{stem}{DATASET_SUFFIX.get(dataset.format, '')}"))


def _fetch_model(store: Store, model: StoredModel, dest: Path) -> str:
    found = [name for name in MODEL_FILES if store.exists(f"{model.storage_prefix}/{name}")]
    if "model.json" not in found:
        raise FileNotFoundError(f"model {model.id}: no model.json under {model.storage_prefix}")
    for name in found:
        fetch(store, f"{model.storage_prefix}/{name}", dest / name)
    return str(dest)


def stage_inputs(
    job: ClaimedJob, store: Store, run_dir: Path, *, inception_weights: Path | None = None, torch_threads: int = 0
) -> ChildArgs:
    """Fetch the job's inputs (and, on a later attempt, its newest checkpoint) into `run_dir`."""
    inputs, out = run_dir / "inputs", run_dir / "out"
    out.mkdir(parents=True, exist_ok=True)
    if job.checkpoint_key:
        # The core resumes by itself from the newest file in out/checkpoints/.
        fetch(store, job.checkpoint_key, out / "checkpoints" / Path(job.checkpoint_key).name)
    return ChildArgs(
        spec={"method": job.method, "hyperparameters": job.hyperparameters, "seed": job.seed},
        data=_fetch_dataset(store, job.dataset, inputs, "train"),
        data_format=job.dataset.format,
        out_dir=str(out),
        validation=_fetch_dataset(store, job.validation, inputs, "validation") if job.validation else None,
        validation_format=job.validation.format if job.validation else None,
        base_model=_fetch_model(store, job.base_model, inputs / "base_model") if job.base_model else None,
        evaluator=_fetch_model(store, job.evaluator, inputs / "evaluator") if job.evaluator else None,
        inception_weights=str(inception_weights) if inception_weights else None,
        torch_threads=torch_threads,
    )


def content_type(name: str) -> str:
    return CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream")


def upload_artifacts(store: Store, job_id: str, out_dir: Path, names: list[str]) -> list[ArtifactRecord]:
    """Store each named file of the run folder under `jobs/<id>/artifacts/`, with size and sha256.

    Keys depend only on the job and the name, so running this twice overwrites (atomically)
    rather than duplicating.
    """
    records = []
    for name in names:
        key = f"{artifacts_prefix(job_id)}/{name}"
        size, sha256 = store.put_file(key, out_dir / name)
        records.append(ArtifactRecord(name, size, sha256, content_type(name), key))
    return records


def output_model(job: ClaimedJob, out_dir: Path, artifacts: list[ArtifactRecord]) -> OutputModel:
    """The Model row for a succeeded job: its main network, described by model.json.

    An ssgan job that started from a user's program writes its classifier back as a program
    (model.json `{"format": "program"}`): then the model is `model.pt2`, which is what a later job
    loads and what `GET /v1/models/{id}/weights` serves; `model.safetensors` beside it holds the
    same weights, but no architecture to load them into.
    """
    by_name = {a.name: a for a in artifacts}
    if "model.json" not in by_name:
        raise FileNotFoundError("the run produced no model.json")
    config: dict[str, Any] = json.loads((out_dir / "model.json").read_text(encoding="utf-8"))
    kind: Literal["weights", "program"] = "program" if config.get("format") == "program" else "weights"
    main = by_name.get("model.pt2" if kind == "program" else "model.safetensors")
    if main is None:
        raise FileNotFoundError(f"the run produced no {'model.pt2' if kind == 'program' else 'model.safetensors'}")
    if job.method == "ssgan":
        role = "classifier"
    else:  # adapt: the generator, with its discriminator when the run kept one (then usable as a base GAN)
        role = "gan" if "discriminator.safetensors" in by_name else "generator"
    return OutputModel(
        name=f"{job.method} {job.id}",
        role=role,
        config=config,
        storage_prefix=artifacts_prefix(job.id),
        size_bytes=main.size_bytes,
        sha256=main.sha256,
        kind=kind,
    )
