"""The text part of ssgan's hyperparameters (`hyperparameters.text`): what only GAN-BERT runs read.

Torch-free, like ganft_core/config.py, so the API validates it at POST time. Defaults chosen by measurement on
the Rotten Tomatoes bench (bench/RESULTS.md, "ssgan on text").
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class TextOptions(BaseModel):
    """GAN-BERT options (Croce et al. 2020); the shared ssgan fields keep their meaning (see README)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_length: Annotated[int, Field(ge=4, le=512)] = 64  # tokens per text, [CLS] and [SEP] included; longer: cut
    encoder_lr: Annotated[float, Field(gt=0.0, le=1.0)] = 1e-4  # AdamW lr of the encoder (ssgan and the control)
    head_lr: Annotated[float, Field(gt=0.0, le=1.0)] = 1e-3  # AdamW lr of D's head (and the control's)
    generator_lr: Annotated[float, Field(gt=0.0, le=1.0)] = 1e-3  # AdamW lr of the feature-space generator
    warmup_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1  # linear lr warm-up over this share of steps,
    # then linear decay to 0 (BERT fine-tuning's schedule)
    weight_decay: Annotated[float, Field(ge=0.0, le=1.0)] = 0.01  # AdamW decoupled weight decay (not on G)
    grad_clip: Annotated[float, Field(ge=0.0, le=1000.0)] = 1.0  # max global gradient norm per net; 0 = off
