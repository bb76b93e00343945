"""Errors the core raises. Each carries a stable `code` the service maps to `error.code`."""

from __future__ import annotations


class GanftError(Exception):
    """Base error: `code` is machine-readable, the message is for people, `field` names the culprit."""

    code = "internal"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field

    def to_dict(self) -> dict[str, str]:
        out = {"code": self.code, "message": self.message}
        if self.field:
            out["field"] = self.field
        return out


class DatasetError(GanftError):
    """The dataset cannot be used: wrong shape, unknown format, hostile archive, too few labels."""

    code = "invalid_dataset"


class ModelError(GanftError):
    """A model (weights, config or exported program) does not fit what the job needs."""

    code = "invalid_model"


class SpecError(GanftError):
    """The training spec is invalid (bounds, unknown fields, impossible combinations)."""

    code = "invalid_spec"


class NanLossError(GanftError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""

    code = "nan_loss"


class Aborted(GanftError):
    """The abort hook asked the run to stop; a checkpoint was written first."""

    code = "cancelled"
