"""Transfers: upload of an npz dataset (~1 GiB, or `--mib`) and download of an artifact of its size, on loopback.

Targets: upload with the API process's peak RSS growing by less than 64 MiB; download at
least 500 MB/s. Alternatives measured in the same run: `dd conv=fsync` of the same file on
the same disk (the API fsyncs what it stores) and `dd` reading the stored file to /dev/null.

    python bench/transfer.py [--mib 1024] [--no-multipart] [--record]

The client is curl (C, streams the file: `-T FILE -X POST`, `-F file=@FILE`). The API runs as
`uvicorn api.main:app --workers 1`, so the uvicorn process is the one that serves (its RSS is
read from /proc: VmHWM, reset before each transfer). The upload's dataset check runs in a
subprocess (`python -m ganft_core inspect`), whose RSS is sampled separately: it streams
the arrays, so it stays small whatever the file's size (measured exactly, with the old
approach beside it, by bench/inspect_memory.py). The server-side timeline splits an upload into "receive"
(body -> store, hashed and fsynced) and "inspect" (from the inspector's start to the response).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import common
import numpy as np
import procfs

IMAGE = (64, 64, 3)  # uint8 H×W×C: 12 KiB an image
TARGET_RSS_MIB, TARGET_DOWNLOAD_MBPS = 64, 500
MB = 1e6  # throughputs are in MB/s (10^6 bytes), sizes in MiB


def make_npz(path: Path, mib: int) -> int:
    """An uncompressed npz of uint8 images (x) and labels (y, half unlabeled) of about `mib` MiB.

    x.npy is written in chunks into the zip (numpy would first build the whole array in memory).
    """
    n = (mib * common.MIB) // int(np.prod(IMAGE))
    rng = np.random.default_rng(0)
    block = rng.integers(0, 256, size=(256, *IMAGE), dtype=np.uint8)  # repeated: content does not matter
    y = np.where(np.arange(n) % 2 == 0, (np.arange(n) // 2) % 10, -1).astype(np.int64)
    header = {"descr": "|u1", "fortran_order": False, "shape": (n, *IMAGE)}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, header)
            for start in range(0, n, len(block)):
                member.write(block[: min(len(block), n - start)].tobytes())
        with archive.open("y.npy", "w") as member:
            np.lib.format.write_array(member, y)
    return n


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def curl(args: list[str], output: str = "/dev/stdout") -> dict[str, Any]:
    """Run curl; returns its -w timings plus the response body (JSON when it is, when it goes to stdout)."""
    fmt = (
        '{"code":%{http_code},"time_total":%{time_total},"size_upload":%{size_upload},"size_download":%{size_download}}'
    )
    done = subprocess.run(
        ["curl", "-sS", "-o", output, "-w", "\n" + fmt, *args], capture_output=True, text=True, check=True
    )
    body, _, stats = done.stdout.rpartition("\n")
    out: dict[str, Any] = json.loads(stats)
    try:
        out["body"] = json.loads(body)
    except json.JSONDecodeError:
        out["body"] = body[:200]
    return out


def upload(api: common.ApiServer, key: str, path: Path, *, multipart: bool) -> dict[str, Any]:
    pid = api.worker_pids()[0]
    rss_before = procfs.rss_bytes(pid)
    procfs.reset_peak_rss(pid)
    auth = ["-H", f"Authorization: Bearer {key}", "-H", "Expect:"]
    if multipart:
        args = [*auth, "-F", f"file=@{path};type=application/octet-stream", "-F", "format=npz",
                f"{api.url}/v1/datasets"]  # fmt: skip
    else:
        args = [*auth, "-X", "POST", "-T", str(path), "-H", "Content-Type: application/octet-stream",
                f"{api.url}/v1/datasets?name=big.npz&format=npz"]  # fmt: skip
    load = common.load_average()
    start = time.perf_counter()
    with procfs.ChildPeakSampler(pid) as inspector:
        response = curl(args)
    if response["code"] != 201:
        raise RuntimeError(f"upload failed: {response}")
    receive_s = (inspector.first_seen or time.perf_counter()) - start
    size = path.stat().st_size
    return {
        "kind": "multipart" if multipart else "raw body",
        "bytes": size,
        "total_s": response["time_total"],
        "receive_s": receive_s,
        "inspect_s": response["time_total"] - receive_s,
        "receive_mbps": size / receive_s / MB,
        "total_mbps": size / response["time_total"] / MB,
        "api_rss_before_mib": rss_before / common.MIB,
        "api_peak_growth_mib": (procfs.peak_rss_bytes(pid) - rss_before) / common.MIB,
        "inspector_peak_mib": inspector.peak / common.MIB,
        "load_before": load,
        "dataset": response["body"],
    }


def register_artifact(stack: common.Stack, dataset: dict[str, Any], store_root: Path) -> tuple[str, str]:
    """A succeeded job of the dataset's tenant with one artifact: the uploaded file, hard-linked (no copy)."""
    from sqlalchemy import update

    from ganft.db.session import session_scope
    from ganft.db.tables import Artifact, Dataset, Job
    from ganft.repo import jobs

    with session_scope(stack.engine()) as session:
        row = session.get_one(Dataset, dataset["id"])
        if row.storage_key is None:  # (nullable: a resumable upload's row exists before its file does)
            raise RuntimeError(f"dataset {row.id} has no stored file")
        job = jobs.create(
            session, tenant_id=row.tenant_id, method="ssgan", dataset_id=row.id, validation_dataset_id=None,
            base_model_id=None, evaluator_model_id=None, hyperparameters={}, seed=0, max_runtime_s=None,
            metadata={}, total_steps=1, max_attempts=1, idempotency_key=None, request_hash="0" * 64,
        )  # fmt: skip
        session.execute(update(Job).where(Job.id == job.id).values(status="succeeded"))
        key = f"jobs/{job.id}/artifacts/big.bin"
        (store_root / key).parent.mkdir(parents=True)
        os.link(store_root / row.storage_key, store_root / key)
        session.add(Artifact(job_id=job.id, name="big.bin", size_bytes=row.size_bytes, sha256=row.sha256,
                             content_type="application/octet-stream", storage_key=key))  # fmt: skip
        return job.id, key


def download(api: common.ApiServer, key: str, job_id: str, size: int) -> dict[str, Any]:
    pid = api.worker_pids()[0]
    rss_before = procfs.rss_bytes(pid)
    procfs.reset_peak_rss(pid)
    cpu_before = procfs.cpu_seconds(pid)
    load = common.load_average()
    response = curl(
        ["-H", f"Authorization: Bearer {key}", f"{api.url}/v1/jobs/{job_id}/artifacts/big.bin"], output="/dev/null"
    )
    if response["code"] != 200 or response["size_download"] != size:
        raise RuntimeError(f"download failed: {response}")
    return {
        "bytes": size,
        "total_s": response["time_total"],
        "mbps": size / response["time_total"] / MB,
        "api_cpu_s": procfs.cpu_seconds(pid) - cpu_before,
        "api_peak_growth_mib": (procfs.peak_rss_bytes(pid) - rss_before) / common.MIB,
        "load_before": load,
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": common.machine().__dict__, "uploads": [], "downloads": []}
    with common.service_stack() as stack:
        source = stack.data_dir / "big.npz"
        started = time.perf_counter()
        n = make_npz(source, args.mib)
        size = source.stat().st_size
        print(f"made {source.name}: {n} images {IMAGE}, {size / common.MIB:.0f} MiB "
              f"in {time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
        copy_s = timed(["dd", f"if={source}", f"of={stack.data_dir / 'copy.npz'}", "bs=1M", "conv=fsync"])
        (stack.data_dir / "copy.npz").unlink()
        results["copy"] = {"s": copy_s, "mbps": size / copy_s / MB, "tool": "dd bs=1M conv=fsync"}
        print(f"dd copy (fsync): {size / copy_s / MB:.0f} MB/s", flush=True)
        key = stack.create_keys("bench", 1)[0]
        with common.api_server(stack, workers=1) as api:
            for multipart in (False, True) if args.multipart else (False,):
                run = upload(api, key, source, multipart=multipart)
                results["uploads"].append(run)
                print(f"upload ({run['kind']}): receive {run['receive_mbps']:.0f} MB/s, total {run['total_s']:.1f} s, "
                      f"API peak RSS +{run['api_peak_growth_mib']:.1f} MiB, "
                      f"inspector {run['inspector_peak_mib']:.0f} MiB", flush=True)  # fmt: skip
            dataset = results["uploads"][0]["dataset"]
            store_root = Path(stack.env["GANFT_STORE_URL"].removeprefix("file://"))
            job_id, artifact_key = register_artifact(stack, dataset, store_root)
            stored = store_root / artifact_key
            for attempt in range(2):  # the second read of each finds the file in the page cache
                read_s = timed(["dd", f"if={stored}", "of=/dev/null", "bs=1M"])
                run = download(api, key, job_id, size)
                run["disk_read_mbps"] = size / read_s / MB
                results["downloads"].append(run)
                print(f"download #{attempt + 1}: {run['mbps']:.0f} MB/s (dd read: {run['disk_read_mbps']:.0f} MB/s), "
                      f"API CPU {run['api_cpu_s']:.1f} s, API peak RSS +{run['api_peak_growth_mib']:.1f} MiB",
                      flush=True)  # fmt: skip
    return results


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    m = common.Machine(**results["machine"])
    copy = results["copy"]
    size_mib = results["uploads"][0]["bytes"] / common.MIB
    lines = [
        f"`python bench/transfer.py {' '.join(args.argv)}` ({m.describe()}). One npz of {size_mib:.0f} MiB "
        f"(uint8 images {IMAGE[0]}×{IMAGE[1]}×{IMAGE[2]}), curl on loopback, `uvicorn api.main:app --workers 1`, "
        f"store and source file on the same disk. Alternative: `dd bs=1M conv=fsync` of the file on that disk: "
        f"{copy['mbps']:.0f} MB/s.",
        "",
        "| upload | receive MB/s (body -> store, fsynced) | vs dd copy | inspect s | total s | API peak RSS growth MiB "
        "| inspector peak RSS MiB | load before |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for u in results["uploads"]:
        lines.append(
            f"| {u['kind']} | {u['receive_mbps']:.0f} | {u['receive_mbps'] / copy['mbps']:.2f} | {u['inspect_s']:.1f} "
            f"| {u['total_s']:.1f} | {u['api_peak_growth_mib']:.1f} | {u['inspector_peak_mib']:.0f} "
            f"| {u['load_before']} |"
        )
    lines += [
        "",
        "| download | MB/s | `dd` read of the stored file MB/s | ratio | API CPU s | API peak RSS growth MiB "
        "| load before |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, d in enumerate(results["downloads"], 1):
        lines.append(
            f"| #{i} | {d['mbps']:.0f} | {d['disk_read_mbps']:.0f} | {d['mbps'] / d['disk_read_mbps']:.2f} "
            f"| {d['api_cpu_s']:.1f} | {d['api_peak_growth_mib']:.1f} | {d['load_before']} |"
        )
    worst_rss = max(u["api_peak_growth_mib"] for u in results["uploads"])
    best_download = max(d["mbps"] for d in results["downloads"])
    lines += [
        "",
        f"Targets: upload API peak RSS growth < {TARGET_RSS_MIB} MiB: {worst_rss:.1f} MiB -> "
        f"{'met' if worst_rss < TARGET_RSS_MIB else 'missed'}; download >= {TARGET_DOWNLOAD_MBPS} MB/s: "
        f"{best_download:.0f} MB/s -> {'met' if best_download >= TARGET_DOWNLOAD_MBPS else 'missed'}.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=1020,
                        help="dataset size in MiB (up to GANFT_MAX_UPLOAD_BYTES: 32 GiB by default)")  # fmt: skip
    parser.add_argument("--no-multipart", dest="multipart", action="store_false", help="upload the raw body only")
    return common.parse_bench_args(parser, section="service: transfers", argv=argv)


def main() -> None:
    args = parse_args()
    results = measure(args)
    for u in results["uploads"]:
        u.pop("dataset")
    common.publish("transfer", results, report(results, args), args)


if __name__ == "__main__":
    main()
