"""Which S3 client streams a large upload with the least memory: obstore, boto3 or minio-py.

    python bench/store_clients.py [--mib 1024] [--record]

Starts a private SeaweedFS (tests/s3_server.py: 127.0.0.1 only, GOMEMLIMIT=512MiB) and, for each
client, a fresh Python process that streams `--mib` MiB from a generator of new 1 MiB chunks (as the
API receives a request body) into one object, the way that client streams an upload of unknown
length: obstore `put(iterator)`, boto3 `upload_fileobj` (its TransferConfig defaults: 8 MiB
parts, 10 threads), minio `put_object(length=-1, part_size=...)`. Reports the process's peak RSS
growth over its RSS just before the upload (VmHWM - VmRSS, after imports), the time and MB/s.
boto3 and minio are installed for this benchmark only (`pip install boto3 minio`); ganft uses obstore.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import load_average, machine, parse_bench_args, publish

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.s3_server import ACCESS_KEY, BUCKET, SECRET_KEY, SeaweedS3  # noqa: E402

MIB = 1024**2
CLIENTS = ("obstore", "obstore-default", "ganft-store", "boto3", "minio")

CHILD = r"""
import json, sys, time
client, endpoint, mib = sys.argv[1], sys.argv[2], int(sys.argv[3])
ACCESS, SECRET, BUCKET = sys.argv[4], sys.argv[5], sys.argv[6]
CHUNK = b"\x5a" * (1 << 20)

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

def chunks():  # a new object per chunk, as the API receives them (one shared object would let a
    for _ in range(mib):  # zero-copy client keep every part for free)
        yield bytes(bytearray(CHUNK))

class Reader:  # a file-like view of the generator, for clients that read() a stream
    def __init__(self):
        self._it, self._buf = chunks(), b""
    def read(self, n=-1):
        while n < 0 or len(self._buf) < n:
            try:
                self._buf += next(self._it)
            except StopIteration:
                break
        if n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out

key = f"bench/{client}"
if client.startswith("obstore"):
    import obstore
    from obstore.store import S3Store
    store = S3Store(BUCKET, endpoint=endpoint, access_key_id=ACCESS, secret_access_key=SECRET, region="us-east-1",
                    virtual_hosted_style_request=False, client_options={"allow_http": True})
    kwargs = {} if client == "obstore-default" else {"chunk_size": 8 << 20, "max_concurrency": 4}
    run = lambda: obstore.put(store, key, chunks(), **kwargs)
elif client == "ganft-store":
    sys.path.insert(0, sys.argv[7])
    from ganft.store_s3 import S3Store as GanftS3, S3Options
    store = GanftS3(S3Options(bucket=BUCKET, prefix="bench", endpoint=endpoint, region="us-east-1",
                              access_key_id=ACCESS, secret_access_key=SECRET, path_style=True))
    def run():
        with store.open_write("ganft-store") as writer:
            for chunk in chunks():
                writer.write(chunk)
            writer.commit()
elif client == "boto3":
    import boto3
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS, aws_secret_access_key=SECRET,
                      region_name="us-east-1")
    run = lambda: s3.upload_fileobj(Reader(), BUCKET, key)
elif client == "minio":
    from minio import Minio
    m = Minio(endpoint.removeprefix("http://"), access_key=ACCESS, secret_key=SECRET, secure=False, region="us-east-1")
    run = lambda: m.put_object(BUCKET, key, Reader(), length=-1, part_size=10 << 20)
before = status("VmRSS")
t = time.perf_counter()
run()
seconds = time.perf_counter() - t
print(json.dumps({"client": client, "growth": status("VmHWM") - before, "seconds": seconds}))
"""


def run_client(client: str, endpoint: str, mib: int) -> dict[str, float]:
    args = [sys.executable, "-c", CHILD, client, endpoint, str(mib), ACCESS_KEY, SECRET_KEY, BUCKET, str(ROOT)]
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=900)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"rc {done.returncode}"}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="upload size in MiB")
    parser.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated: " + ", ".join(CLIENTS))
    args = parse_bench_args(parser, section="store: S3 clients", argv=None)
    load_before = load_average()
    rows = []
    with tempfile.TemporaryDirectory(prefix="ganft-s3bench-") as folder:
        server = SeaweedS3(Path(folder))
        server.start()
        try:
            for client in args.clients.split(","):
                result = run_client(client, server.endpoint, args.mib)
                rows.append((client, result))
                print(client, result, flush=True)
        finally:
            server.stop()
    lines = [
        f"`python bench/store_clients.py {' '.join(args.argv)}` ({machine().describe()}). "
        f"One {args.mib} MiB object streamed from a generator of "
        "1 MiB chunks into SeaweedFS 4.48 (`weed mini`, loopback, GOMEMLIMIT=512MiB), each client in a fresh process; "
        f"load average before {load_before}, after {load_average()}.",
        "",
        "| client (how it streams) | peak RSS growth MiB | s | MB/s |",
        "| --- | --- | --- | --- |",
    ]
    how = {
        "obstore": "obstore 0.12.1 `put(iterator, chunk_size=8 MiB, max_concurrency=4)`",
        "obstore-default": "obstore 0.12.1 `put(iterator)` defaults (5 MiB parts, 12 in flight)",
        "ganft-store": "ganft `S3Store.open_write` (obstore behind a bounded queue)",
        "boto3": "boto3 1.44.5 `upload_fileobj` (TransferConfig defaults)",
        "minio": "minio 7.2.20 `put_object(length=-1, part_size=10 MiB)`",
    }
    for client, r in rows:
        if "error" in r:
            lines.append(f"| {how.get(client, client)} | failed: {r['error']} | | |")
        else:
            mbps = args.mib * MIB / 1e6 / r["seconds"]
            lines.append(f"| {how.get(client, client)} | {r['growth'] / MIB:.0f} | {r['seconds']:.1f} | {mbps:.0f} |")
    mib = {client: r["growth"] / MIB for client, r in rows if "error" not in r}
    if {"obstore", "boto3", "minio"} <= set(mib):
        lines += [
            "",
            f"Peak RSS growth in this run: obstore {mib['obstore']:.0f} MiB, boto3 {mib['boto3']:.0f}, "
            f"minio {mib['minio']:.0f}. ganft uses obstore (chosen on this memory figure; speeds on loopback are "
            "close), whose iterator input also aborts the multipart upload when the iterator fails. ganft's "
            "writer (the API's uploads) holds one part and a queue of four 1 MiB pieces over obstore with 2 "
            "parts in flight.",
        ]
    publish("store_clients", {"mib": args.mib, "results": dict(rows)}, "\n".join(lines), args)


if __name__ == "__main__":
    main()
