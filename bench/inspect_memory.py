"""Dataset inspection memory: peak RSS of the API's inspector subprocess on a ~1 GiB npz.

Target: the inspector's peak RSS grows by less than 256 MiB over its own baseline (the same
child on a one-example file: interpreter, numpy, Pillow and the CLI imported), whatever the
dataset's size.

    python bench/inspect_memory.py [--mib 1020] [--cases images features] [--baseline DIR] [--record]

Each case is one npz made in a temporary folder (x written into the zip chunk by chunk):
- `images`: uint8 N×64×64×3 (channels last: the inspector maps it to N×C×H×W), y half
  unlabeled, stored (the file of bench/transfer.py);
- `features`: float32 N×256, y, deflated (level 1): the inspector inflates it as a stream.

Each run is a fresh child started the way the API starts it (`api.validation.inspector_command`:
same interpreter, environment and RLIMIT_AS, default GANFT_INSPECT_MAX_MEMORY_BYTES); its
peak RSS is the kernel's own figure for it, `ru_maxrss` from `os.wait4` in a small launcher
process (see `_LAUNCH`), so nothing is sampled. Runs per case:
- `baseline`: the inspector on a one-example npz of the same kind;
- `this tree`: the inspector on the big file;
- `np.load + astype`: the old approach in the same child (`np.load`, then x and y converted
  to float32 / int64, as the inspector did before it streamed);
- with `--baseline DIR`: the inspector of another checkout (e.g. `git archive <commit>`
  unpacked in DIR), which must print the same summary.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import common
import numpy as np

from api.validation import inspector_command
from ganft.settings import Settings

TARGET_GROWTH_MIB = 256
IMAGE = (64, 64, 3)  # uint8 H×W×C, 12 KiB an image
FEATURES = 256  # float32 values per example, 1 KiB
# The old approach in a child fenced like the inspector (RLIMIT_AS first, then numpy).
_OLD = (
    "import resource, sys\n"
    "limit = int(sys.argv[1])\n"
    "resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"
    "import numpy as np\n"
    "arrays = np.load(sys.argv[2])\n"
    "x = arrays['x'].astype(np.float32)\n"
    "y = arrays['y'].astype(np.int64)\n"
    "print(len(x), int((y >= 0).sum()))\n"
)


def make_npz(path: Path, case: str, n: int) -> None:
    """An npz of `n` examples of `case` (see the module docstring), x written a block at a time."""
    rng = np.random.default_rng(0)
    if case == "images":
        block = rng.integers(0, 256, size=(256, *IMAGE), dtype=np.uint8)  # repeated: content does not matter
        compression, level = zipfile.ZIP_STORED, None
    else:
        block = rng.normal(size=(4096, FEATURES)).astype(np.float32)
        compression, level = zipfile.ZIP_DEFLATED, 1
    y = np.where(np.arange(n) % 2 == 0, (np.arange(n) // 2) % 10, -1).astype(np.int64)
    header = {"descr": block.dtype.str, "fortran_order": False, "shape": (n, *block.shape[1:])}
    with zipfile.ZipFile(path, "w", compression=compression, compresslevel=level, allowZip64=True) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, header)
            for start in range(0, n, len(block)):
                member.write(block[: min(len(block), n - start)].tobytes())
        with archive.open("y.npy", "w") as member:
            np.lib.format.write_array(member, y)


def examples_for(case: str, mib: int) -> int:
    row = int(np.prod(IMAGE)) if case == "images" else FEATURES * 4
    return (mib * common.MIB) // row


# Starts the child and prints its exit code and ru_maxrss (KiB) on stderr's last line. Why a
# launcher: at exec, Linux folds the spawning process's RSS high-water into the child's
# ru_maxrss (the spawner's memory is the child's until exec), so the spawner must be small.
_LAUNCH = (
    "import os, sys\n"
    "pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ)\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "sys.stderr.write(f'\\n{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}\\n')\n"
)


def run_child(command: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Run one child to the end; its peak RSS is the kernel's (`ru_maxrss`), read by a small launcher.

    `cwd` holds no code: `python -c` puts the working directory first on sys.path, and only
    PYTHONPATH may choose which ganft_core runs.
    """
    start = time.perf_counter()
    launcher = [sys.executable, "-c", _LAUNCH, *command]
    done = subprocess.run(launcher, env=env, cwd=cwd, capture_output=True, check=True)
    seconds = time.perf_counter() - start
    stderr = done.stderr.decode("utf-8", "replace").rstrip("\n")
    exit_code, max_rss_kib = (int(v) for v in stderr.rsplit("\n", 1)[-1].split())
    return {
        "exit": exit_code,
        "peak_mib": max_rss_kib * 1024 / common.MIB,
        "s": seconds,
        "stdout": done.stdout.decode("utf-8", "replace"),
        "stderr": stderr[-500:],
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    limit = Settings.model_fields["inspect_max_memory_bytes"].default
    results: dict[str, Any] = {"machine": common.machine().__dict__, "limit_bytes": limit, "cases": []}
    with tempfile.TemporaryDirectory(prefix="ganft-inspect-") as folder:
        for case in args.cases:
            n = examples_for(case, args.mib)
            big, tiny = Path(folder) / f"{case}.npz", Path(folder) / f"{case}-1.npz"
            started = time.perf_counter()
            make_npz(big, case, n)
            make_npz(tiny, case, 1)
            size = big.stat().st_size
            print(f"{case}: {n} examples, {size / common.MIB:.0f} MiB in {time.perf_counter() - started:.0f} s",
                  flush=True)  # fmt: skip
            command, env = inspector_command(big, "npz", max_memory_bytes=limit)
            runs: dict[str, dict[str, Any]] = {}
            variants = [
                ("baseline", inspector_command(tiny, "npz", max_memory_bytes=limit)),
                ("this tree", (command, env)),
                ("np.load + astype", ([command[0], "-c", _OLD, str(limit), str(big)], env)),
            ]
            if args.baseline is not None:
                variants.append(("baseline checkout", (command, {**env, "PYTHONPATH": str(args.baseline)})))
            for name, (argv, child_env) in variants:
                load = common.load_average()
                run = run_child(argv, child_env, Path(folder))
                run["load_before"] = load
                if run["exit"] != 0:
                    raise RuntimeError(
                        f"{case} / {name} exited with {run['exit']}: {run['stdout'][-500:]}{run['stderr']}"
                    )
                runs[name] = run
                print(f"  {name}: peak RSS {run['peak_mib']:.0f} MiB, {run['s']:.1f} s", flush=True)
            stats = json.loads(runs["this tree"]["stdout"])
            if stats["examples"] != n or stats["labeled"] != (n + 1) // 2:
                raise RuntimeError(f"{case}: the inspector reported {stats}")
            if args.baseline is not None and json.loads(runs["baseline checkout"]["stdout"]) != stats:
                raise RuntimeError(f"{case}: the baseline checkout's summary differs from this tree's")
            for run in runs.values():
                run.pop("stdout")
                run.pop("stderr")
            results["cases"].append({"case": case, "examples": n, "bytes": size, "runs": runs})
    return results


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    m = common.Machine(**results["machine"])
    baseline = (
        f" `baseline checkout` = the inspector of {args.baseline_name or args.baseline}." if args.baseline else ""
    )
    lines = [
        f"`` {shlex.join(['python', 'bench/inspect_memory.py', *args.argv])} `` ({m.describe()}). Each figure is one "
        f"fresh inspector child started as the API starts it (RLIMIT_AS {results['limit_bytes'] / 1024**3:g} GiB); "
        "peak RSS = its `ru_maxrss` (`os.wait4` in a small launcher). Growth = peak minus the `baseline` run "
        f"(the same child on a one-example npz).{baseline} Times are informational.",
        "",
        "| case | npz MiB | run | peak RSS MiB | growth MiB | s | load before |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    worst = 0.0
    for c in results["cases"]:
        base = c["runs"]["baseline"]["peak_mib"]
        for name, run in c["runs"].items():
            growth = run["peak_mib"] - base
            lines.append(
                f"| {c['case']} | {c['bytes'] / common.MIB:.0f} | {name} | {run['peak_mib']:.0f} "
                f"| {growth:.0f} | {run['s']:.1f} | {run['load_before']} |"
            )
        worst = max(worst, c["runs"]["this tree"]["peak_mib"] - base)
    lines += [
        "",
        f"Target: growth < {TARGET_GROWTH_MIB} MiB: {worst:.0f} MiB at worst -> "
        f"{'met' if worst < TARGET_GROWTH_MIB else 'missed'}.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=1020, help="size of x (under the 1 GiB member limit)")
    parser.add_argument("--cases", nargs="+", choices=("images", "features"), default=["images", "features"])
    parser.add_argument("--baseline", type=Path, help="also run the inspector of this checkout (e.g. git archive)")
    parser.add_argument("--baseline-name", help="what the baseline is, for the report (e.g. `commit abc1234`)")
    return common.parse_bench_args(parser, section="core: dataset inspection memory", argv=argv)


def main() -> None:
    args = parse_args()
    results = measure(args)
    common.publish("inspect_memory", results, report(results, args), args)


if __name__ == "__main__":
    main()
