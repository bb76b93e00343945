"""Checks of uploaded model files without torch: safetensors headers and `.pt2` archive layouts.

A safetensors file is an 8-byte little-endian header length, a JSON header
`{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`, then the raw
tensor bytes; the header alone tells whether the file is well formed. Pickles, `torch.save`
zips and TorchScript archives are refused by their first bytes. A `.pt2` is a zip that
`torch.export.save` wrote; TorchScript (`constants.pkl`, `code/`) and pickles (`data.pkl`)
are refused here, and the worker screens every entry again before torch sees the file.
Nothing here loads tensors: the full shape check against the architecture is the worker's.
"""

from __future__ import annotations

import json
import math
import struct
import zipfile
from pathlib import Path
from typing import Any

from api.problems import invalid

MAX_HEADER_BYTES = 100 * 1024**2  # the safetensors reference implementation's own limit
MAX_PROGRAM_ENTRIES = 100_000
MAX_TOKENIZER_BYTES = 64 * 1024**2  # BERT WordPiece: 0.7 MB; large multilingual vocabularies: ~20 MB
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL = 0x80  # pickle protocol 2+ starts with PROTO


def _refuse_foreign(head: bytes, field: str, expected: str) -> None:
    if head.startswith(_ZIP_MAGIC):
        raise invalid(field, f"this is a zip archive (torch.save, TorchScript or .pt2), not {expected}")
    if head[:1] == bytes([_PICKLE_PROTOCOL]) or head.startswith(b"\x80\x02\x8a"):
        raise invalid(field, f"this is a Python pickle, not {expected}; pickles are never loaded")


def check_safetensors(path: Path, *, field: str) -> dict[str, Any]:
    """Summary `{tensors, parameters, dtypes}` of a well-formed safetensors file, else a 422 on `field`."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        _refuse_foreign(head, field, "a safetensors file")
        if len(head) < 8:
            raise invalid(field, "too short to be a safetensors file")
        (header_len,) = struct.unpack("<Q", head)
        if header_len < 2 or header_len > min(MAX_HEADER_BYTES, size - 8):
            raise invalid(field, f"not a safetensors file (header length {header_len} does not fit the file)")
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise invalid(field, "not a safetensors file (the header is not JSON)") from None
    if not isinstance(header, dict):
        raise invalid(field, "not a safetensors file (the header is not a JSON object)")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise invalid(field, "safetensors __metadata__ must map strings to strings")
    if not header:
        raise invalid(field, "the safetensors file holds no tensors")
    spans: list[tuple[int, int, str]] = []
    parameters = 0
    dtypes: set[str] = set()
    for name, info in header.items():
        begin, end, count, dtype = _tensor_span(name, info, field)
        spans.append((begin, end, name))
        parameters += count
        dtypes.add(dtype)
    _check_layout(spans, data_bytes=size - 8 - header_len, field=field)
    return {"tensors": len(spans), "parameters": parameters, "dtypes": sorted(dtypes)}


def _tensor_span(name: str, info: Any, field: str) -> tuple[int, int, int, str]:
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise invalid(field, f"tensor {name!r}: expected dtype, shape and data_offsets")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in DTYPE_BYTES:
        raise invalid(field, f"tensor {name!r}: unsupported dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise invalid(field, f"tensor {name!r}: shape must be a list of non-negative integers")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise invalid(field, f"tensor {name!r}: data_offsets must be [begin, end] with 0 <= begin <= end")
    count = math.prod(shape)
    if offsets[1] - offsets[0] != count * DTYPE_BYTES[dtype]:
        raise invalid(
            field,
            f"tensor {name!r}: {offsets[1] - offsets[0]} bytes for shape {shape} of {dtype} "
            f"({count * DTYPE_BYTES[dtype]} expected)",
        )
    return offsets[0], offsets[1], count, dtype


def _check_layout(spans: list[tuple[int, int, str]], *, data_bytes: int, field: str) -> None:
    """Tensors must tile the data section exactly: no gaps, no overlaps, nothing past the end."""
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise invalid(field, f"tensor {name!r} overlaps another or leaves a gap at byte {position}")
        position = end
    if position != data_bytes:
        raise invalid(field, f"the tensors cover {position} bytes but the file holds {data_bytes} after the header")


def check_program(path: Path, *, field: str = "program") -> dict[str, Any]:
    """Summary `{entries}` of a `torch.export.save` archive, else a 422 on `field`."""
    with open(path, "rb") as f:
        head = f.read(8)
    if not head.startswith(_ZIP_MAGIC):
        _refuse_foreign(head, field, "a torch.export program")
        raise invalid(field, "not a torch.export program (.pt2 is a zip archive)")
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            names = [_relative(info.filename, infos[0].filename, field) for info in infos]
            if len(names) > MAX_PROGRAM_ENTRIES:
                raise invalid(field, f"the archive holds more than {MAX_PROGRAM_ENTRIES} entries")
            if "constants.pkl" in names or any(n.startswith("code/") for n in names):
                raise invalid(
                    field,
                    "TorchScript archives are not accepted; export with torch.export.export and save with "
                    "torch.export.save",
                )
            if "data.pkl" in names:
                raise invalid(
                    field, "this is a torch.save pickle, not a torch.export program; pickles are never loaded"
                )
            if any(n.startswith("data/aotinductor/") for n in names):
                raise invalid(field, "programs with compiled code (AOTInductor) are not accepted")
            if "archive_format" not in names or "models/model.json" not in names:
                raise invalid(field, "not a torch.export program (no archive_format or models/model.json)")
            root = infos[0].filename.split("/", 1)[0]
            if archive.read(f"{root}/archive_format") != b"pt2":
                raise invalid(field, "not a torch.export program (archive_format is not pt2)")
    except zipfile.BadZipFile as exc:
        raise invalid(field, f"not a readable zip archive: {exc}") from None
    return {"entries": len(names)}


def _relative(name: str, first: str, field: str) -> str:
    """`name` below the archive's single root folder; absolute or `..` paths are refused."""
    root = first.split("/", 1)[0]
    if name.startswith("/") or "\\" in name or ".." in name.split("/"):
        raise invalid(field, f"the archive holds an unsafe path {name!r}")
    if not name.startswith(root + "/"):
        raise invalid(field, "a torch.export archive has a single root folder")
    return name[len(root) + 1 :]


def check_tokenizer(path: Path, *, field: str = "tokenizer") -> None:
    """A Hugging Face `tokenizers` file (tokenizer.json: a JSON object with a `model`), else a 422 on `field`.

    The worker loads it with `tokenizers` and checks its vocabulary against the encoder's."""
    if path.stat().st_size > MAX_TOKENIZER_BYTES:
        raise invalid(field, f"tokenizer.json is over {MAX_TOKENIZER_BYTES} bytes")
    try:
        value = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise invalid(field, "not a tokenizer.json (not UTF-8 JSON); send the file `tokenizers` saves") from None
    if not isinstance(value, dict) or not isinstance(value.get("model"), dict):
        raise invalid(field, "not a tokenizer.json (no `model` object); send the file `tokenizers` saves")


def parse_config(text: str | None, *, field: str = "config") -> dict[str, Any]:
    """The JSON object in a `config` part, else a 422 naming `field`."""
    if text is None:
        raise invalid(field, "required: a JSON object describing the model")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise invalid(field, f"malformed JSON: {exc}") from None
    if not isinstance(value, dict):
        raise invalid(field, "must be a JSON object")
    return value
