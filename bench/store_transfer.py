"""Transfers through the API with each artifact store: `file://`, `s3://`, and `s3://` with presigned downloads.

    python bench/store_transfer.py [--mib 1020] [--record]

One run, one private stack (bench/common.py) and one private SeaweedFS (tests/s3_server.py:
loopback, GOMEMLIMIT=512MiB). The same ~1 GiB npz (bench/transfer.py `make_npz`) is uploaded with
curl as the raw body to `uvicorn api.main:app --workers 1` over a `file://` store and then over an
`s3://` store (multipart upload to SeaweedFS, plus the local copy the API inspects). Each
uploaded file is then registered as a job's artifact and downloaded twice (curl to /dev/null)
from the API over `file://`, from the API streaming from S3, and with `GANFT_STORE_PRESIGN=1`
(the API answers 307 to a presigned URL; `curl -L` takes the bytes from SeaweedFS). Reported: the
API's receive MB/s (body -> store, until the inspector starts) and total time, download MB/s,
and the serving process's peak RSS growth (VmHWM reset before each transfer, bench/procfs.py).
Client, API, S3 server and disk share the machine's CPUs, so the S3 figures include SeaweedFS's
own work; on separate machines the network sets the pace instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import procfs
import transfer

sys.path.insert(0, str(common.ROOT))
from tests.s3_server import ACCESS_KEY, BUCKET, SECRET_KEY, SeaweedS3  # noqa: E402

MB = 1e6
TARGET_RSS_MIB = 64


def s3_env(server: SeaweedS3, *, presign: bool) -> dict[str, str]:
    return {
        "GANFT_STORE_URL": f"s3://{BUCKET}/bench",
        "GANFT_STORE_ENDPOINT": server.endpoint,
        "GANFT_STORE_REGION": "us-east-1",
        "GANFT_STORE_ACCESS_KEY_ID": ACCESS_KEY,
        "GANFT_STORE_SECRET_ACCESS_KEY": SECRET_KEY,
        "GANFT_STORE_PATH_STYLE": "1",
        "GANFT_STORE_PRESIGN": "1" if presign else "0",
    }


def register_artifact(stack: common.Stack, dataset_id: str) -> str:
    """A succeeded job of the dataset's tenant whose one artifact `big.bin` is the uploaded file (same key)."""
    from sqlalchemy import update

    from ganft.db.session import session_scope
    from ganft.db.tables import Artifact, Dataset, Job
    from ganft.repo import jobs

    with session_scope(stack.engine()) as session:
        row = session.get_one(Dataset, dataset_id)
        job = jobs.create(
            session, tenant_id=row.tenant_id, method="ssgan", dataset_id=row.id, validation_dataset_id=None,
            base_model_id=None, evaluator_model_id=None, hyperparameters={}, seed=0, max_runtime_s=None,
            metadata={}, total_steps=1, max_attempts=1, idempotency_key=None, request_hash="0" * 64,
        )  # fmt: skip
        session.execute(update(Job).where(Job.id == job.id).values(status="succeeded"))
        session.add(Artifact(job_id=job.id, name="big.bin", size_bytes=row.size_bytes, sha256=str(row.sha256),
                             content_type="application/octet-stream", storage_key=str(row.storage_key)))  # fmt: skip
        return job.id


def download(api: common.ApiServer, key: str, job_id: str, size: int, *, follow: bool) -> dict[str, Any]:
    pid = api.worker_pids()[0]
    rss_before = procfs.rss_bytes(pid)
    procfs.reset_peak_rss(pid)
    cpu_before = procfs.cpu_seconds(pid)
    load = common.load_average()
    args = ["-H", f"Authorization: Bearer {key}", f"{api.url}/v1/jobs/{job_id}/artifacts/big.bin"]
    response = transfer.curl((["-L"] if follow else []) + args, output="/dev/null")
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
    with common.service_stack() as stack, tempfile.TemporaryDirectory(prefix="ganft-s3bench-") as folder:
        server = SeaweedS3(Path(folder))
        server.start()
        try:
            source = stack.data_dir / "big.npz"
            transfer.make_npz(source, args.mib)
            size = source.stat().st_size
            print(f"made {source.name}: {size / common.MIB:.0f} MiB", flush=True)
            key = stack.create_keys("bench", 1)[0]
            stores = {
                "file://": stack,
                "s3://": dataclasses.replace(stack, env={**stack.env, **s3_env(server, presign=False)}),
                "s3:// presigned": dataclasses.replace(stack, env={**stack.env, **s3_env(server, presign=True)}),
            }
            uploaded: dict[str, str] = {}  # store -> job id of the artifact
            for name, env_stack in stores.items():
                with common.api_server(env_stack, workers=1) as api:
                    if name != "s3:// presigned":  # the same store as s3://: only downloads differ
                        run = transfer.upload(api, key, source, multipart=False)
                        run["store"] = name
                        results["uploads"].append(run)
                        uploaded[name] = register_artifact(stack, run.pop("dataset")["id"])
                        print(f"upload {name}: receive {run['receive_mbps']:.0f} MB/s, total {run['total_s']:.1f} s, "
                              f"API peak RSS +{run['api_peak_growth_mib']:.1f} MiB", flush=True)  # fmt: skip
                    job_id = uploaded["s3://" if name == "s3:// presigned" else name]
                    for attempt in range(2):
                        d = download(api, key, job_id, size, follow=name == "s3:// presigned")
                        d["store"], d["attempt"] = name, attempt + 1
                        results["downloads"].append(d)
                        print(f"download {name} #{attempt + 1}: {d['mbps']:.0f} MB/s, API CPU {d['api_cpu_s']:.1f} s, "
                              f"API peak RSS +{d['api_peak_growth_mib']:.1f} MiB", flush=True)  # fmt: skip
        finally:
            server.stop()
    return results


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    m = common.Machine(**results["machine"])
    size_mib = results["uploads"][0]["bytes"] / common.MIB
    base_up = results["uploads"][0]
    lines = [
        f"`python bench/store_transfer.py {' '.join(args.argv)}` ({m.describe()}). One npz of {size_mib:.0f} MiB, "
        "curl on loopback, `uvicorn api.main:app --workers 1` over each store in turn, SeaweedFS 4.48 "
        "(`weed mini`, GOMEMLIMIT=512MiB) on the same 2 CPUs for `s3://` (8 MiB parts, 2 in flight). "
        "Receive = body -> store (and, for S3, the local copy the inspector reads), until the inspector starts.",
        "",
        "| upload (raw body) | receive MB/s | vs file:// | inspect s | total s | API peak RSS growth MiB "
        "| load before |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for u in results["uploads"]:
        lines.append(
            f"| {u['store']} | {u['receive_mbps']:.0f} | {u['receive_mbps'] / base_up['receive_mbps']:.2f} "
            f"| {u['inspect_s']:.1f} | {u['total_s']:.1f} | {u['api_peak_growth_mib']:.1f} | {u['load_before']} |"
        )
    best_file = max(d["mbps"] for d in results["downloads"] if d["store"] == "file://")
    lines += [
        "",
        "| download | # | MB/s | vs best file:// | API CPU s | API peak RSS growth MiB | load before |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for d in results["downloads"]:
        lines.append(
            f"| {d['store']} | {d['attempt']} | {d['mbps']:.0f} | {d['mbps'] / best_file:.2f} | {d['api_cpu_s']:.1f} "
            f"| {d['api_peak_growth_mib']:.1f} | {d['load_before']} |"
        )
    worst = max([u["api_peak_growth_mib"] for u in results["uploads"]] + [d["api_peak_growth_mib"]
                for d in results["downloads"]])  # fmt: skip
    lines += [
        "",
        f"API peak RSS growth < {TARGET_RSS_MIB} MiB in every transfer: worst {worst:.1f} MiB -> "
        f"{'met' if worst < TARGET_RSS_MIB else 'missed'}.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=1020, help="dataset size (x.npy must stay under 1 GiB)")
    return common.parse_bench_args(parser, section="store: transfers through the API", argv=argv)


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    results = measure(args)
    results["wall_s"] = time.perf_counter() - started
    common.publish("store_transfer", results, report(results, args), args)


if __name__ == "__main__":
    main()
