"""Screening a user's `.pt2` before `torch.export.load` sees it: nothing is unpickled, no code is run.

`torch.export.load` is not a safe loader in torch 2.13. In torch/export/pt2_archive/_package.py,
weights or constants marked `use_pickle`, "custom_obj"/"opaque_obj" constants, legacy `.pt` weight
files and sample inputs that fail `weights_only=True` reach `torch.load(weights_only=False)` or
`pickle.loads`; `data/aotinductor/` holds compiled shared libraries. In the graph JSON
(torch/_export/serde/serialize.py), a node target is any callable reachable by getattr from `torch`
(`torch.os.system` resolves), symbolic shapes go through `sympy.sympify` (which evals strings),
pytree specs may name a module to import, and `guards_code` is exec'd by `.module()`.

So the archive is read with Python's zipfile; every entry is checked against an allow-list; the
graph's node targets must be ATen/prims ops or symbolic-int arithmetic; every shape expression must
use only sympy names, numbers and shape symbols; pytree specs must not name modules; guards code is
dropped. Exactly the entries that passed are written into a fresh archive with torch's own writer,
and only that copy is loaded: the parser that checked the bytes is the one that chose them.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import torch
from torch.export.pt2_archive._package import PT2ArchiveWriter

from ganft_core.errors import ModelError

MAX_PROGRAM_BYTES = 4 * 2**30  # uncompressed size limit of a user's program archive
MODEL = "model"  # torch.export.save writes one program, named "model"

# Entries (below the archive's root folder) that a torch.export.save'd program may hold.
_ALLOWED = re.compile(
    r"^(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/model\.json|data/sample_inputs/model\.pt"
    r"|data/weights/model_weights_config\.json|data/weights/weight_\d+"
    r"|data/constants/model_constants_config\.json|data/constants/tensor_\d+"
    r"|extra/[\w.\-]+)$"
)
_WRITER_OWNED = {".data/version", ".data/serialization_id"}  # PyTorchFileWriter writes its own


def sanitize_program(src: Path, dst: Path) -> None:
    """Check the `.pt2` at `src` and write its allowed entries to `dst`; anything unsafe is a ModelError."""
    if not zipfile.is_zipfile(src):
        raise ModelError(f"{src.name} is not a torch.export program (.pt2 zip archive)", field="program")
    entries = _read_entries(src)
    if "constants.pkl" in entries or any(n.startswith("code/") for n in entries):
        raise ModelError(
            "TorchScript archives are not accepted; export the model with torch.export.export "
            "and save it with torch.export.save",
            field="program",
        )
    if "data.pkl" in entries:
        raise ModelError(
            f"{src.name} is a torch.save pickle, not a torch.export program; pickles are never loaded", field="program"
        )
    if entries.get("archive_format") != b"pt2" or "models/model.json" not in entries:
        raise ModelError(
            f"{src.name} is not a torch.export program (no pt2 archive_format / models/model.json)", field="program"
        )
    if entries.get("archive_version") != b"0":
        raise ModelError(f"unsupported pt2 archive version {entries.get('archive_version')!r}", field="program")
    for name in entries:
        if not _ALLOWED.match(name):
            what = "compiled code (AOTInductor)" if name.startswith("data/aotinductor/") else "an unexpected entry"
            raise ModelError(
                f"the program holds {what}: {name!r}; only plain torch.export.save archives are accepted",
                field="program",
            )
    _check_payload_config(entries, "data/weights/model_weights_config.json", "weight_")
    _check_payload_config(entries, "data/constants/model_constants_config.json", "tensor_")
    _check_sample_inputs(entries.get("data/sample_inputs/model.pt"))
    entries["models/model.json"] = _checked_graph(entries["models/model.json"])
    with PT2ArchiveWriter(str(dst)) as writer:
        for name, data in entries.items():
            if name not in _WRITER_OWNED:
                writer.write_bytes(name, data)


def _read_entries(src: Path) -> dict[str, bytes]:
    """Entry name (root folder stripped) -> bytes. One root, no duplicates, bounded size."""
    try:
        with zipfile.ZipFile(src) as zf:
            infos = zf.infolist()
            names = [i.filename for i in infos]
            if len(set(names)) != len(names):
                raise ModelError("the program archive holds duplicate entry names", field="program")
            if sum(i.file_size for i in infos) > MAX_PROGRAM_BYTES:
                raise ModelError(f"the program archive unpacks to more than {MAX_PROGRAM_BYTES} bytes", field="program")
            roots = {n.split("/", 1)[0] for n in names}
            if len(roots) != 1 or any("/" not in n for n in names):
                raise ModelError(
                    "the program archive must hold one root folder (as torch.export.save writes)", field="program"
                )
            out: dict[str, bytes] = {}
            for info in infos:
                if info.is_dir():
                    continue
                out[info.filename.split("/", 1)[1]] = zf.read(info)
            return out
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ModelError(f"the program archive cannot be read: {e}", field="program") from None


def _check_payload_config(entries: dict[str, bytes], config_name: str, prefix: str) -> None:
    """Every weight/constant must be a raw tensor payload (`use_pickle` false) stored in the archive."""
    raw = entries.get(config_name)
    if raw is None:
        raise ModelError(f"the program archive lacks {config_name}", field="program")
    try:
        config = json.loads(raw)["config"]
        items = list(config.items())
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ModelError(f"{config_name} in the program archive is malformed", field="program") from None
    for fqn, meta in items:
        if not isinstance(meta, dict):
            raise ModelError(f"{config_name} in the program archive is malformed", field="program")
        path = meta.get("path_name")
        if meta.get("use_pickle") is not False or not isinstance(path, str) or not path.startswith(prefix):
            raise ModelError(
                f"the program stores {fqn!r} as a pickled or custom object; only tensors are accepted", field="program"
            )
        folder = config_name.rsplit("/", 1)[0]
        if f"{folder}/{path}" not in entries:
            raise ModelError(f"the program archive lacks the payload of {fqn!r}", field="program")


def _check_sample_inputs(data: bytes | None) -> None:
    """torch falls back to weights_only=False when this fails; we refuse instead."""
    if data is None:
        raise ModelError("the program archive lacks its sample inputs", field="program")
    try:
        torch.load(io.BytesIO(data), weights_only=True)
    except Exception:  # any failure here means torch would unpickle it unsafely
        raise ModelError("the program's sample inputs are not plain tensors", field="program") from None


# The graph JSON ----------------------------------------------------------------------------------

_OP_TARGET = re.compile(r"^torch\.ops\.(aten|prims)\.\w+\.\w+$")
_UNSAFE_OPS = re.compile(r"file|save|load")  # aten.from_file maps (and can write) files by name
# The symbolic-int arithmetic torch serialises as Python callables (serialize.py `_SYM_OPS`).
_SYM_TARGETS = {
    f"_operator.{n}"
    for n in ("eq ne le ge lt gt neg pos mul add sub floordiv mod pow truediv and_ or_ lshift rshift".split())
} | {
    "math.trunc",
    "torch.sym_not",
    "torch.sym_int",
    "torch.sym_float",
    "torch.sym_ite",
    "torch.sym_max",
    "torch.sym_min",
    "torch.sym_sqrt",
}
# Names a shape expression may use: sympy classes, torch's sympy functions, assumption keywords.
_EXPR_NAMES = set(
    """
Symbol Integer Float Rational Add Mul Pow Max Min Eq Ne Lt Le Gt Ge StrictLessThan StrictGreaterThan
LessThan GreaterThan Equality Unequality And Or Not Piecewise ExprCondPair Abs floor ceiling sqrt oo zoo nan
true false True False None S Half One Zero NegativeOne Infinity NegativeInfinity BooleanTrue BooleanFalse
FloorDiv ModularIndexing Where PythonMod Mod CleanDiv CeilToInt FloorToInt CeilDiv LShift RShift PowByNatural
FloatPow FloatTrueDiv IntTrueDiv IsNonOverlappingAndDenseIndicator TruncToFloat TruncToInt RoundToInt
RoundDecimal ToFloat Identity OpaqueUnaryFn_sqrt
positive negative nonnegative nonpositive integer real finite infinite zero nonzero even odd commutative
rational extended_real
""".split()
)
_SHAPE_SYMBOL = re.compile(r"^[a-z]{1,4}\d+$")  # s77, u0, zuf3 ...
_NUMBER = re.compile(r"(?<![\w.])\d+(\.\d*)?([eE][+-]?\d+)?")
_QUOTED_SYMBOL = re.compile(r"'([a-z]{1,4}\d+)'")
_EXPR_CHARS = re.compile(r"^[A-Za-z0-9_ +\-*/%(),.<>=!&|~^']*$")
_FORBIDDEN_TEXT = ("__", "default_factory", "import")


def _checked_graph(raw: bytes) -> bytes:
    """The graph JSON after the checks above, with `guards_code` removed."""
    try:
        program = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise ModelError("models/model.json in the program archive is not valid JSON", field="program") from None
    if not isinstance(program, dict) or not isinstance(program.get("graph_module"), dict):
        raise ModelError("models/model.json in the program archive is malformed", field="program")
    _walk(program)
    program["guards_code"] = []
    return json.dumps(program).encode()


def _walk(value: object) -> None:
    if isinstance(value, dict):
        if "target" in value and "inputs" in value:
            _check_target(value["target"])
        for key, item in value.items():
            if key == "expr_str":
                _check_expr(item)
            elif key == "custom_obj_values" and item:
                raise ModelError(
                    "the program holds custom (TorchBind) objects; only tensors are accepted", field="program"
                )
            elif key == "as_custom_obj":
                raise ModelError(
                    "the program holds custom (TorchBind) objects; only tensors are accepted", field="program"
                )
            _walk(item)
    elif isinstance(value, list):
        for item in value:
            _walk(item)
    elif isinstance(value, str):
        if value[:1] in "[{":  # pytree specs and metadata are JSON inside strings
            try:
                inner = json.loads(value)
            except ValueError:
                inner = None
            if isinstance(inner, (dict, list)):
                _walk(inner)
        if "__enum__" in value or "default_factory_module" in value:
            raise ModelError(
                "the program's input/output structure names a Python module; use tensors, tuples, lists and dicts only",
                field="program",
            )


def _check_target(target: object) -> None:
    ok = isinstance(target, str) and (
        (_OP_TARGET.match(target) is not None and not _UNSAFE_OPS.search(target.split(".")[3]))
        or target in _SYM_TARGETS
    )
    if not ok:
        raise ModelError(f"the program calls {target!r}; only ATen operators are accepted", field="program")


def _check_expr(expr: object) -> None:
    """A sympy expression string (sympify evals it): only numbers, shape symbols and sympy names."""
    ok = isinstance(expr, str) and _EXPR_CHARS.match(expr) is not None
    if ok and isinstance(expr, str):
        text = _NUMBER.sub(" ", _QUOTED_SYMBOL.sub(" ", expr))
        names = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text)
        ok = (
            "'" not in text
            and "." not in text
            and not any(f in text for f in _FORBIDDEN_TEXT)
            and all(n in _EXPR_NAMES or _SHAPE_SYMBOL.match(n) for n in names)
        )
    if not ok:
        raise ModelError(f"the program holds an unexpected shape expression {str(expr)[:80]!r}", field="program")
