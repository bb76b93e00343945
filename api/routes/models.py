"""`/v1/models`: upload a pretrained model (safetensors + config, or a torch.export program), read, download, delete.

The store folder `models/{id}/` is laid out as a trainer's `base_model` folder
(docs/CONTRACTS.md): `model.safetensors` + `model.json` (+ `discriminator.*` for a GAN,
+ `tokenizer.json` for a text model), or `model.pt2` + `model.json` (`{"format": "program",
"class_names": [...]}`).
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.deps import ModelDep, SessionDep, SettingsDep, StoreDep, TenantDep
from api.downloads import stored_file_response
from api.model_files import check_program, check_safetensors, check_tokenizer, parse_config
from api.problems import Problem, from_validation_error, invalid, not_found
from api.quota import upload_limit
from api.schemas import ListOf, ModelConfig, ModelOut
from api.uploads import Received, check_declared_length, receive_multipart
from ganft.db.session import session_scope
from ganft.db.tables import new_id
from ganft.repo import models
from ganft.repo.pages import InvalidCursor
from ganft.store import Store, StoreUnavailable

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/models", tags=["models"])

MODEL_FORMAT_VERSION = 1  # ModelMeta.format_version in ganft_core/models/io.py
_UPLOAD_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["config"],
                    "properties": {
                        "weights": {"type": "string", "format": "binary", "description": "safetensors"},
                        "discriminator": {"type": "string", "format": "binary", "description": "a GAN's D"},
                        "program": {"type": "string", "format": "binary", "description": "torch.export .pt2"},
                        "tokenizer": {"type": "string", "format": "binary", "description": "tokenizer.json (text)"},
                        "config": {"type": "string", "description": "JSON: architecture, arguments, class_names"},
                        "name": {"type": "string"},
                    },
                }
            }
        },
    }
}


@router.post("", status_code=201, response_model=ModelOut, openapi_extra=_UPLOAD_DOC)
async def upload_model(request: Request, tenant: TenantDep, settings: SettingsDep, store: StoreDep) -> ModelOut:
    """Upload a model: multipart `weights` (safetensors) + `config`, or `program` (.pt2) + `config`."""
    check_declared_length(request, settings.max_upload_bytes)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise Problem(415, "send the model as multipart/form-data (weights or program, and config)")
    limit = await upload_limit(
        request.app.state.engine, tenant_id=tenant.tenant_id, max_upload_bytes=settings.max_upload_bytes
    )
    check_declared_length(request, limit)
    model_id = new_id("mdl")
    prefix = models.storage_prefix_for(model_id)
    try:
        received = await receive_multipart(
            request,
            store=store,
            file_keys={
                "weights": f"{prefix}/model.safetensors",
                "discriminator": f"{prefix}/discriminator.safetensors",
                "program": f"{prefix}/model.pt2",
                "tokenizer": f"{prefix}/tokenizer.json",
            },
            text_fields=frozenset({"config", "name"}),
            max_bytes=limit,
            max_text_bytes=settings.max_json_bytes,
        )
        return await run_in_threadpool(_register, request, received, tenant.tenant_id, model_id, store)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(store.delete_prefix, prefix)
        raise


def _register(request: Request, received: Received, tenant_id: str, model_id: str, store: Store) -> ModelOut:
    """Check the received parts, write model.json, insert the row (in the threadpool: disk + DB)."""
    files = received.files
    try:
        config = ModelConfig.model_validate(parse_config(received.fields.get("config")))
    except ValidationError as exc:
        raise from_validation_error(exc, prefix="config") from None
    prefix = models.storage_prefix_for(model_id)
    text = config.role == "encoder" or (config.input_layout is not None and config.input_layout.kind == "text")
    if text != ("tokenizer" in files):
        raise invalid("tokenizer", "a text model (input_layout text) comes with its tokenizer.json, no other does")
    if "program" in files:
        if "weights" in files or "discriminator" in files:
            raise invalid("program", "send either a program or weights, not both")
        if text:
            raise invalid("program", "a text model is uploaded as weights (safetensors) with its tokenizer")
        check_program(store.local_path(files["program"].key))
        if not config.class_names:
            raise invalid("config.class_names", "required for a program: the classifier's class names in order")
        kind, role, main = "program", "classifier", files["program"]
        meta: dict[str, Any] = {"format": "program", "class_names": config.class_names}
    elif "weights" in files:
        kind, main = "weights", files["weights"]
        role, meta = _weights_meta(config, has_discriminator="discriminator" in files)
        check_safetensors(store.local_path(main.key), field="weights")
        if text:
            check_tokenizer(store.local_path(files["tokenizer"].key))
        if "discriminator" in files:
            check_safetensors(store.local_path(files["discriminator"].key), field="discriminator")
            store.put_bytes(f"{prefix}/discriminator.json", _json(meta.pop("discriminator")))
    else:
        raise invalid("weights", "required: a safetensors file (or `program`, a torch.export .pt2)")
    store.put_bytes(f"{prefix}/model.json", _json(meta))
    name = received.fields.get("name") or config.name or main.filename or model_id
    with session_scope(request.app.state.engine) as session:
        row = models.create(
            session,
            model_id=model_id,
            tenant_id=tenant_id,
            name=name[:200],
            kind=kind,  # type: ignore[arg-type]
            role=role,
            config=meta,
            size_bytes=main.size,
            sha256=main.sha256,
        )
        return ModelOut.model_validate(row)


def _weights_meta(config: ModelConfig, *, has_discriminator: bool) -> tuple[str, dict[str, Any]]:
    """(row role, model.json) for a weights upload; a GAN's `discriminator` entry is split off by the caller."""
    if not config.architecture:
        raise invalid("config.architecture", "required: the architecture the weights belong to")
    if config.input_layout is None:
        raise invalid("config.input_layout", "required: the data layout the model reads or makes")
    if config.role == "classifier" and not config.class_names:
        raise invalid("config.class_names", "required for a classifier: its class names in order")
    if config.role == "encoder" and (config.input_layout.kind != "text" or config.class_names):
        raise invalid("config.role", "an encoder reads texts (input_layout text) and has no head, so no class_names")
    if has_discriminator != (config.discriminator is not None):
        raise invalid("discriminator", "a GAN needs both the `discriminator` file and config.discriminator")
    if config.discriminator is not None and config.role != "generator":
        raise invalid("config.role", "a model with a discriminator is a GAN: its main network must be the generator")
    layout = config.input_layout.model_dump(exclude_none=True)
    meta: dict[str, Any] = {
        "architecture": config.architecture,
        "arguments": config.arguments,
        "class_names": config.class_names,
        "input_layout": layout,
        "role": config.role,
        "normalization": config.normalization,
        "format_version": MODEL_FORMAT_VERSION,
    }
    role: str = config.role
    if config.discriminator is not None:
        role = "gan"
        meta["discriminator"] = {
            "architecture": config.discriminator.architecture,
            "arguments": config.discriminator.arguments,
            "class_names": [],
            "input_layout": layout,
            "role": "discriminator",
            "normalization": config.discriminator.normalization,
            "format_version": MODEL_FORMAT_VERSION,
        }
    return role, meta


def _json(value: dict[str, Any]) -> bytes:
    return (json.dumps(value, indent=2) + "\n").encode()


@router.get("", response_model=ListOf[ModelOut])
def list_models(
    session: SessionDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: Annotated[str | None, Query(max_length=500)] = None,
) -> ListOf[ModelOut]:
    """The tenant's models (uploaded and produced by jobs), newest first."""
    try:
        page = models.list_models(session, tenant_id=tenant.tenant_id, limit=limit, after=after)
    except InvalidCursor as exc:
        raise invalid("after", str(exc)) from None
    return ListOf[ModelOut](data=[ModelOut.model_validate(m) for m in page.items], next_cursor=page.next_cursor)


@router.get("/{model_id}", response_model=ModelOut)
def get_model(model: ModelDep) -> ModelOut:
    """One model: its kind, role and model.json."""
    return ModelOut.model_validate(model)


@router.get("/{model_id}/weights", response_class=Response)
def download_weights(request: Request, model: ModelDep, store: StoreDep) -> Response:
    """Download the model's main file (`model.safetensors`, or `model.pt2` for a program); Range honoured."""
    key = models.main_file_key(model)
    if not store.exists(key) or model.sha256 is None:
        raise Problem(404, f"the weights of model {model.id!r} are missing from the artifact store")
    suffix = key.rsplit(".", 1)[1]
    return stored_file_response(
        request,
        store=store,
        key=key,
        size=store.size(key),
        sha256=model.sha256,
        content_type="application/octet-stream",
        filename=f"{model.id}.{suffix}",
    )


@router.delete("/{model_id}", status_code=204)
def delete_model(model_id: str, session: SessionDep, tenant: TenantDep, store: StoreDep) -> Response:
    """Delete a model: gone from the API at once, its files once no unfinished job uses it."""
    model = models.get(session, tenant_id=tenant.tenant_id, model_id=model_id, lock="update")
    if model is None:
        raise not_found("model", model_id)
    held = models.in_use(session, model_id=model_id)
    models.mark_deleted(session, model_id=model_id)
    session.commit()
    # A job's output model is the job's artifacts folder: it goes with the artifacts (GANFT_RETAIN_ARTIFACTS_DAYS).
    # An uploaded model still used by a queued or running job is removed by the garbage collector later.
    if model.source_job_id is None and not held:
        try:
            store.delete_prefix(model.storage_prefix)
        except StoreUnavailable as exc:  # deleted all the same: the garbage collector removes the files later
            log.warning("model %s: its files stay until the next garbage collection (%s)", model_id, exc)
    return Response(status_code=204)
