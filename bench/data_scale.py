"""Datasets at scale (issue 10): peak RSS and time of loading and training, stored form against the old loader.

    python bench/data_scale.py [--counts 80000] [--steps 30] [--record]
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
- `numpy: mmap gather`: `np.load(shard, mmap_mode="r")` and `steps` random batches of 16 gathered;
- `train: ...`: `adapt` from scratch (64-px DCGAN G/D, batch 16, no evaluator) for `steps` steps on
  the old in-memory dataset, the stored form on the Feed's on-device path (RAM on a CPU "device"),
  and streamed (GANFT_FEED_MAX_DEVICE_BYTES=0: every batch gathered from the memory map, prefetched).
  steps/s is measured between the logs at steps/3 and `steps` (loading and the first steps excluded).
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
    import numpy as np
    x = np.load(os.path.join(stored, "x-00000.npy"), mmap_mode="r")
    rng = np.random.default_rng(0)
    for _ in range(steps):
        batch = np.asarray(x[np.sort(rng.integers(0, len(x), 16))], dtype=np.float32) / 255
    result["examples"] = len(x)
else:
    import torch
    torch.set_num_threads(1)
    from ganft_core.config import TrainSpec
    from ganft_core.data import load_dataset
    from ganft_core.train import train
    ds = load_dataset(path) if mode == "train_old" else load_dataset(path, stored=stored)
    loaded = time.perf_counter() - started
    hp = {"steps": steps, "batch_size": 16, "log_every": steps // 3, "eval_every": steps,
          "checkpoint_every": steps, "eval_samples": 16, "z_dim": 64}
    spec = TrainSpec.model_validate({"method": "adapt", "hyperparameters": hp, "seed": 0})
    train(spec, ds, __import__("pathlib").Path(out), device="cpu")
    logs = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl")) if '"log"' in l]
    (a, b) = logs[0], logs[-1]
    result.update(examples=len(ds), load_s=loaded, steps_per_s=(b["step"] - a["step"]) / (b["seconds"] - a["seconds"]),
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
    counts = sorted(set(args.counts) | {1000})  # the 1,000-image run is the training memory reference
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
            modes = ["ingest", "reopen", "mmap_gather", "train_stored_streamed"]
            if n * int(np.prod(IMAGE)) <= 4 << 30:
                modes.append("train_stored_on_device")
            if fits_old and (n == 1000 or n in args.compare):
                modes = ["old_load", "numpy_load", *modes, "train_old"]
            runs: dict[str, Any] = {}
            for mode in modes:
                extra = {"GANFT_FEED_MAX_DEVICE_BYTES": "0"} if mode == "train_stored_streamed" else {}
                runs[mode] = _run(mode, path, stored, out, args.steps, {**env, **extra}, root)
                r = runs[mode]
                rate = f", {r['steps_per_s']:.2f} steps/s" if "steps_per_s" in r else ""
                print(f"  {mode}: peak RSS {r['peak_mib']:.0f} MiB, {r['s']:.1f} s{rate}", flush=True)
            disk = sum(p.stat().st_size for p in stored.iterdir())
            results["counts"].append({"examples": n, "npz_bytes": size, "stored_bytes": disk, "runs": runs})
    return results


LABELS = {
    "old_load": "old: load float32", "numpy_load": "numpy: np.load uint8", "ingest": "stored: ingest",
    "reopen": "stored: reopen (sha256 verified)", "mmap_gather": "numpy: mmap gather",
    "train_old": "train: old in-memory",
    "train_stored_on_device": "train: stored, on-device path", "train_stored_streamed": "train: stored, streamed",
}  # fmt: skip


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    m = common.Machine(**results["machine"])
    lines = [
        f"`` {shlex.join(['python', 'bench/data_scale.py', *args.argv])} `` ({m.describe()}). uint8 64×64×3 images "
        "in a stored npz; each row one fresh child, peak RSS = its `ru_maxrss`; see the script's docstring for each "
        f"run. adapt: batch 16, {results['steps']} steps, 1 torch thread; steps/s between the logs at "
        f"{results['steps'] // 3} and {results['steps']}.",
        "",
        "| images | npz MiB | run | peak RSS MiB | s | steps/s | ingest MB/s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    base_train = None
    for c in results["counts"]:
        for mode, r in c["runs"].items():
            rate = f"{r['steps_per_s']:.2f}" if "steps_per_s" in r else ""
            mbs = f"{c['npz_bytes'] / 1e6 / r['s']:.0f}" if mode == "ingest" else ""
            lines.append(f"| {c['examples']} | {c['npz_bytes'] / common.MIB:.0f} | {LABELS[mode]} | "
                         f"{r['peak_mib']:.0f} | {r['s']:.1f} | {rate} | {mbs} |")  # fmt: skip
        if c["examples"] == 1000:
            base_train = c["runs"].get("train_stored_streamed")
    lines.append("")
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
        if "train_old" in runs:
            old_t, new_t = runs["train_old"], runs["train_stored_streamed"]
            lines.append(
                f"- {c['examples']} images, training: streamed peak RSS {new_t['peak_mib']:.0f} MiB = "
                f"{new_t['peak_mib'] / old_t['peak_mib']:.3f}× the old path's; steps/s "
                f"{new_t['steps_per_s'] / old_t['steps_per_s']:.2f}× the old path's."
            )
        if base_train is not None and c["examples"] != 1000:
            streamed = runs["train_stored_streamed"]
            grown = streamed["peak_mib"] - base_train["peak_mib"]
            verdict = "met" if grown < TRAIN_RSS_TARGET_MIB else "missed"
            speed = streamed["steps_per_s"] / base_train["steps_per_s"]
            lines.append(f"- {c['examples']} images streamed vs 1,000: +{grown:.0f} MiB peak RSS (target "
                         f"< {TRAIN_RSS_TARGET_MIB}: {verdict}), steps/s {speed:.2f}× (target ≥ 0.9).")  # fmt: skip
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[80_000], help="image counts to measure")
    parser.add_argument("--compare", type=int, nargs="*", default=[80_000],
                        help="counts at which the old loader and bare numpy also run (RAM permitting)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=30, help="adapt steps per training run")
    parser.add_argument("--tmp", default=None, help="folder for the generated data (deleted after each count)")
    return common.parse_bench_args(parser, section="core: datasets at scale", argv=argv)


if __name__ == "__main__":
    args = parse_args()
    results = measure(args)
    common.publish("data_scale", results, report(results, args), args)
