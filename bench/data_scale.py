"""Datasets at scale (issue 10): peak RSS and time of loading and training, stored form against the old loader.

    python bench/data_scale.py [--counts 80000] [--compare 80000] [--steps 30] [--methods adapt ssgan] [--record]
    python bench/data_scale.py --counts 1000 10000 100000 1000000 --section "core: dataset cost growth" --record

For each count N, an npz of N uint8 images at 64×64×3 (channels last, stored: 12 KiB an image, the
shape of the issue's 983 MB case at 80,000) is written in a temporary folder (x block by block, as
bench/inspect_memory.py writes it), measured, and deleted before the next count. Every figure is one
fresh child (`ru_maxrss` from `os.wait4` in a small launcher, so nothing is sampled):
- `old: load float32`: `load_dataset(path)`, the in-memory loader (x as float32, 4 bytes a value);
- `numpy: np.load uint8`: the bare alternative: `np.load(path)["x"]`, uint8 in RAM, nothing checked;
- `stored: ingest`: `load_dataset(path, stored=DIR)` on an empty DIR: checks, decodes into the
  memory-mapped stored form, hashes it (ingest MB/s = npz bytes / seconds);
- `stored: reopen`: the same call again (the stored form reused, its sha256 verified);
- `feed: streamed gather`: the stored form reopened and 500 random batches of 16 gathered by its Feed
  on the streamed path (what training does per batch, without the nets);
- `train <method>: ...`: each of `--methods` for `steps` steps, 1 torch thread, on the old in-memory
  dataset, the stored form on the Feed's on-device path (RAM on a CPU "device"), and streamed
  (GANFT_FEED_MAX_DEVICE_BYTES=0: every batch gathered from the memory map). `adapt`: from scratch
  (64-px DCGAN G/D, batch 16, no evaluator; the next batch prefetched). `ssgan`: a convnet classifier
  (the narrow default widths for 64 px; the default for this layout, resnet18, runs ~10× slower on a
  shared CPU) and the default generator from scratch with its control, labeled and unlabeled batches
  of 16 (three gathers a step), validation_fraction 0.05 (one evaluation, at the end, in batches).
  steps/s is measured between the logs at steps/3 and `steps` (loading, the first steps and the final
  evaluation excluded); the training child loads the data as the worker's child does
  (`load_dataset(path, stored=...)`).
Speed at scale compares each count's streamed steps/s with the same job on the 1,000-image dataset
held in memory (the old loader); the gather figure (`feed: streamed gather`, ms per batch of 16 rows,
float32/255 included) says how much of a step the data path costs.
Runs that would not fit in RAM are skipped (the old loader needs 4 bytes a value, plus a copy).
The CPU is shared with other engineers' jobs: times are indicative, memory is exact.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import numpy as np
from inspect_memory import IMAGE, make_npz, run_child

TRAIN_RSS_TARGET_MIB = 2048  # the training child may grow this much over the 1,000-image run
_CHILD = r"""
import json, os, sys, time
mode, path, stored, out, steps = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
started = time.perf_counter()
result = {}
if mode == "old_load":
    from ganft_core.data import load_dataset
    ds = load_dataset(path)
    result["examples"] = len(ds)
elif mode == "numpy_load":
    import numpy as np
    x = np.load(path)["x"]
    result["examples"] = len(x)
elif mode in ("ingest", "reopen"):
    from ganft_core.data import load_dataset
    ds = load_dataset(path, stored=stored)
    result.update(examples=len(ds), storage=ds.storage)
elif mode == "mmap_gather":
    import torch
    torch.set_num_threads(1)
    from ganft_core.data import load_dataset
    feed = load_dataset(path, stored=stored).feed("cpu", max_device_bytes=0)  # the streamed path, as training
    gen = torch.Generator().manual_seed(0)
    batches = max(steps, 500)
    gather_started = time.perf_counter()
    for _ in range(batches):
        batch = feed.gather(torch.randint(len(feed), (16,), generator=gen))
    result.update(examples=len(feed), ms_per_batch=1000 * (time.perf_counter() - gather_started) / batches)
else:
    import torch
    torch.set_num_threads(1)
    from ganft_core.config import TrainSpec
    from ganft_core.data import load_dataset
    from ganft_core.train import train
    _, method, path_kind = mode.split("_", 2)  # train_<method>_<old|on_device|streamed>
    ds = load_dataset(path) if path_kind == "old" else load_dataset(path, stored=stored)
    loaded = time.perf_counter() - started
    hp = {"steps": steps, "batch_size": 16, "log_every": steps // 3, "eval_every": steps, "checkpoint_every": steps}
    if method == "adapt":
        hp.update(eval_samples=16, z_dim=64)
    else:
        hp.update(unlabeled_batch_size=16, validation_fraction=0.05, architecture="convnet")
    spec = TrainSpec.model_validate({"method": method, "hyperparameters": hp, "seed": 0})
    logs = []  # (step, seconds) at each step report: every log_every steps, before any evaluation
    def progress(update):
        if update.kind == "step":
            logs.append((update.step, time.perf_counter()))
    train(spec, ds, __import__("pathlib").Path(out), device="cpu", progress=progress)
    (a, b) = logs[0], logs[-1]
    result.update(examples=len(ds), load_s=loaded, steps_per_s=(b[0] - a[0]) / (b[1] - a[1]),
                  on_device=json.load(open(os.path.join(out, "spec.json")))["data_path"]["on_device"])
result["s"] = time.perf_counter() - started
print(json.dumps(result))
"""


def _run(mode: str, path: Path, stored: Path, out: Path, steps: int, env: dict[str, str], cwd: Path) -> dict[str, Any]:
    command = [sys.executable, "-c", _CHILD, mode, str(path), str(stored), str(out), str(steps)]
    shutil.rmtree(out, ignore_errors=True)
    run = run_child(command, env, cwd)
    if run["exit"] != 0:
        raise RuntimeError(f"{mode} exited with {run['exit']}: {run['stderr']}")
    run.update(json.loads(run.pop("stdout").strip().splitlines()[-1]))
    run.pop("stderr")
    run["load_before"] = common.load_average()
    return run


def measure(args: argparse.Namespace) -> dict[str, Any]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(common.ROOT), "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1",
    }  # fmt: skip
    ram = common.machine().ram_gib * 1024**3
    results: dict[str, Any] = {"machine": common.machine().__dict__, "steps": args.steps, "counts": []}
    counts = sorted(set(args.counts) | {1000})  # the 1,000-image runs are the memory and speed references
    for n in counts:
        with tempfile.TemporaryDirectory(prefix="ganft-scale-", dir=args.tmp) as folder:
            root = Path(folder)
            path, stored, out = root / "data.npz", root / "data.npz.stored", root / "run"
            started = time.perf_counter()
            make_npz(path, "images", n)
            size = path.stat().st_size
            print(f"{n} images: npz {size / common.MIB:.0f} MiB written in {time.perf_counter() - started:.0f} s",
                  flush=True)  # fmt: skip
            float_bytes = n * int(np.prod(IMAGE)) * 4
            fits_old = 2.2 * float_bytes < 0.8 * ram  # x float32 plus the loader's transient copies
            old = fits_old and (n == 1000 or n in args.compare)
            modes = (["old_load", "numpy_load"] if old else []) + ["ingest", "reopen", "mmap_gather"]
            for method in args.methods:
                if old:
                    modes.append(f"train_{method}_old")
                if n * int(np.prod(IMAGE)) <= 4 << 30 and args.on_device:
                    modes.append(f"train_{method}_on_device")
                modes.append(f"train_{method}_streamed")
            runs: dict[str, Any] = {}
            for mode in modes:
                extra = {"GANFT_FEED_MAX_DEVICE_BYTES": "0"} if mode.endswith("_streamed") else {}
                runs[mode] = _run(mode, path, stored, out, args.steps, {**env, **extra}, root)
                r = runs[mode]
                rate = f", {r['steps_per_s']:.2f} steps/s" if "steps_per_s" in r else ""
                print(f"  {mode}: peak RSS {r['peak_mib']:.0f} MiB, {r['s']:.1f} s{rate}", flush=True)
            disk = sum(p.stat().st_size for p in stored.iterdir())
            results["counts"].append({"examples": n, "npz_bytes": size, "stored_bytes": disk, "runs": runs})
            common.write_json("data_scale.partial", results)  # kept if a later (bigger) count fails
    return results


def _label(mode: str) -> str:
    fixed = {
        "old_load": "old: load float32", "numpy_load": "numpy: np.load uint8", "ingest": "stored: ingest",
        "reopen": "stored: reopen (sha256 verified)", "mmap_gather": "feed: streamed gather, 16 rows",
    }  # fmt: skip
    if mode in fixed:
        return fixed[mode]
    _, method, kind = mode.split("_", 2)
    return f"train {method}: " + {"old": "old in-memory", "on_device": "stored, on-device path",
                                  "streamed": "stored, streamed"}[kind]  # fmt: skip


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    m = common.Machine(**results["machine"])
    lines = [
        f"`` {shlex.join(['python', 'bench/data_scale.py', *args.argv])} `` ({m.describe()}). uint8 64×64×3 images "
        "in a stored npz; each row one fresh child, peak RSS = its `ru_maxrss`; see the script's docstring for each "
        f"run. Training: batch 16, {results['steps']} steps, 1 torch thread; steps/s between the step reports at "
        f"{results['steps'] // 3} and {results['steps']}. `ms/batch` (streamed gather): one random batch of 16 rows "
        "read from the stored shard by the Feed (file reads, float32/255), the mean of 500.",
        "",
        "| images | npz MiB | run | peak RSS MiB | s | steps/s | ingest MB/s | ms/batch |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in results["counts"]:
        for mode, r in c["runs"].items():
            rate = f"{r['steps_per_s']:.2f}" if "steps_per_s" in r else ""
            mbs = f"{c['npz_bytes'] / 1e6 / r['s']:.0f}" if mode == "ingest" else ""
            ms = f"{r['ms_per_batch']:.2f}" if "ms_per_batch" in r else ""
            lines.append(f"| {c['examples']} | {c['npz_bytes'] / common.MIB:.0f} | {_label(mode)} | "
                         f"{r['peak_mib']:.0f} | {r['s']:.1f} | {rate} | {mbs} | {ms} |")  # fmt: skip
    lines.append("")
    base = next(c["runs"] for c in results["counts"] if c["examples"] == 1000)
    for c in results["counts"]:
        runs = c["runs"]
        if "old_load" in runs:
            old, bare, new = runs["old_load"], runs["numpy_load"], runs["ingest"]
            lines.append(
                f"- {c['examples']} images: stored ingest peak RSS {new['peak_mib']:.0f} MiB = "
                f"{new['peak_mib'] / old['peak_mib']:.3f}× the old loader's and "
                f"{new['peak_mib'] / bare['peak_mib']:.3f}× bare np.load's; time {new['s'] / old['s']:.2f}× the old "
                f"loader's, {new['s'] / bare['s']:.2f}× np.load's; "
                f"reopen {runs['reopen']['s']:.1f} s; stored form {c['stored_bytes'] / common.MIB:.0f} MiB on disk."
            )
        for method in results.get("methods", args.methods):
            streamed = runs.get(f"train_{method}_streamed")
            ref_old, ref_streamed = base.get(f"train_{method}_old"), base.get(f"train_{method}_streamed")
            if streamed is None or ref_old is None or ref_streamed is None:
                continue
            grown = streamed["peak_mib"] - ref_streamed["peak_mib"]
            speed = streamed["steps_per_s"] / ref_old["steps_per_s"]
            mem = "met" if grown < TRAIN_RSS_TARGET_MIB else "missed"
            fast = "met" if speed >= 0.9 else "missed"
            lines.append(
                f"- {c['examples']} images, {method} streamed: peak RSS {streamed['peak_mib']:.0f} MiB, "
                f"{grown:+.0f} MiB over the 1,000-image streamed run (target < {TRAIN_RSS_TARGET_MIB}: {mem}), "
                f"{streamed['peak_mib'] / ref_old['peak_mib']:.2f}× the 1,000-image in-memory run's; steps/s "
                f"{speed:.2f}× the 1,000-image in-memory job's (target ≥ 0.9: {fast})."
            )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[80_000], help="image counts to measure")
    parser.add_argument("--compare", type=int, nargs="*", default=[],
                        help="counts at which the old loader and bare numpy also run (RAM permitting)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=30, help="steps per training run")
    parser.add_argument("--methods", nargs="+", choices=["adapt", "ssgan"], default=["adapt", "ssgan"],
                        help="training methods to measure")  # fmt: skip
    parser.add_argument("--no-on-device", dest="on_device", action="store_false",
                        help="skip the stored form's on-device training runs")  # fmt: skip
    parser.add_argument("--tmp", default=None, help="folder for the generated data (deleted after each count)")
    return common.parse_bench_args(parser, section="core: datasets at scale", argv=argv)


if __name__ == "__main__":
    args = parse_args()
    results = measure(args)
    results["methods"] = args.methods
    common.publish("data_scale", results, report(results, args), args)
