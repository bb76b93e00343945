"""Typed training specs: one pydantic model per method.

This module imports neither torch nor numpy, so the API can validate a JobCreate's
`hyperparameters` at POST time (a 422 naming the field) without loading the trainer.
Every field is optional with a default that works; bounds reject absurd values.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ganft_core.text_config import TextOptions

Method = Literal["ssgan", "adapt"]

Steps = Annotated[int, Field(ge=1, le=1_000_000)]
Batch = Annotated[int, Field(ge=1, le=4096)]
LearningRate = Annotated[float, Field(gt=0.0, le=1.0)]
Beta = Annotated[float, Field(ge=0.0, lt=1.0)]
Interval = Annotated[int, Field(ge=1, le=1_000_000)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


ArchitectureArgument = bool | int | float | str | list[int] | list[float]


class AugmentPolicy(_Strict):
    """Augmentation of the labeled batches of both runs (ssgan and its control), image data only.

    The defaults were chosen by measurement (bench/RESULTS.md, "ssgan on images"): a random shift of up to
    1/8 of the side (zero fill) is what a supervised fine-tune of small images needs; flips are off because
    digits and text-like images must not flip.
    """

    translate: Annotated[float, Field(ge=0.0, le=0.5)] = 0.125  # max random shift, fraction of the side; 0 = off
    hflip: bool = False  # random horizontal flip with probability 1/2
    color: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0  # colour jitter strength (brightness, contrast,
    # saturation by up to ±color), RGB only; 0 = off


class EarlyStopping(_Strict):
    """Stop after `patience` evaluations in a row without improvement of the method's metric (ssgan: validation
    accuracy of the GAN run, adapt: FID); the outputs are then the best evaluated step's weights."""

    patience: Annotated[int, Field(ge=1, le=10_000)]  # evaluations (every eval_every steps) without improvement
    min_delta: Annotated[float, Field(ge=0.0, le=1000.0)] = 0.0  # a smaller gain is no improvement (metric's unit)


class SsganHyperparameters(_Strict):
    """Semi-supervised GAN fine-tuning (Salimans et al. 2016, GAN-BERT)."""

    steps: Steps = 2000  # optimisation steps (one D step + one G step + one control step each)
    batch_size: Batch = 100  # labeled examples per D step, drawn with replacement from the labeled set
    unlabeled_batch_size: Batch = 100  # unlabeled real and generated examples per D step (and per G step)
    # None picks: 3e-3 for a dense net from scratch (Improved-GAN MNIST), 3e-4 for a conv net from
    # scratch (Improved-GAN CIFAR), 1e-3 when fine-tuning a base model (its backbone: × backbone_lr_scale).
    lr_d: LearningRate | None = None  # Adam learning rate of the classifier/discriminator (and the control)
    lr_g: LearningRate | None = None  # Adam learning rate of the generator; None = lr_d
    lr_decay_start: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5  # fraction of steps, then lr falls linearly to 0
    beta1: Beta = 0.5  # Adam beta1 for all nets (Improved-GAN)
    beta2: Beta = 0.999  # Adam beta2 for all nets
    # weight of the real/fake terms in D's loss; None picks 0.3 for images, 1.0 for feature vectors and text
    # (measured: bench/RESULTS.md, "ssgan on images: session 6 notes")
    unsupervised_weight: Annotated[float, Field(ge=0.0, le=100.0)] | None = None
    # fraction of steps over which that weight ramps up from ~0 (sigmoid, Laine & Aila 2017); 0 = full weight at once
    unsupervised_rampup: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    generator_space: Literal["input", "feature"] = "input"  # G makes inputs, or backbone features (GAN-BERT)
    z_dim: Annotated[int, Field(ge=1, le=4096)] = 100  # generator noise size
    architecture: str | None = None  # classifier when no base model: None picks by input layout
    # Overrides of the architecture's registry arguments (e.g. {"hidden": [500, 250]}), checked when the
    # net is built; input shape, class count and normalisation are filled in from the data.
    architecture_arguments: dict[str, ArchitectureArgument] = Field(default_factory=dict)
    freeze_blocks: Annotated[int, Field(ge=0, le=64)] = 0  # lowest backbone blocks kept frozen (both nets)
    # ---- images (ignored for feature vectors): augmentation, consistency, pretrained backbones
    augment: AugmentPolicy = Field(default_factory=AugmentPolicy)  # labeled batches of ssgan and the control
    # DiffAugment (Zhao et al. 2020) on every D input of the GAN terms, real and fake: random translation
    # and cutout (+ colour on RGB); also the strong view of the pseudo-label term.
    diffaugment: bool = True
    # FixMatch-style pseudo-labels (Sohn et al. 2020) on unlabeled reals: the class predicted on the weakly
    # augmented view, where its probability >= the threshold, is the target on the strong (DiffAugment) view.
    pseudo_label_weight: Annotated[float, Field(ge=0.0, le=100.0)] = 1.0  # weight in D's loss; 0 = off
    pseudo_label_threshold: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95  # confidence needed for a target
    # 0: the target is the weak view's argmax (FixMatch); > 0: its sharpened softmax(logits / T) (UDA's soft targets)
    pseudo_label_temperature: Annotated[float, Field(ge=0.0, le=10.0)] = 0.0
    # Conditional entropy of D's class prediction on unlabeled reals (Bad GAN, Dai et al. 2017, sec. 4); 0 = off.
    entropy_weight: Annotated[float, Field(ge=0.0, le=100.0)] = 0.0
    backbone_lr_scale: Annotated[float, Field(gt=0.0, le=1.0)] = 0.1  # pretrained backbone lr = lr_d × this
    head_warmup_steps: Annotated[int, Field(ge=0, le=1_000_000)] = 100  # replaced head trains alone first
    # Batch norm of a pretrained classifier: "train" uses batch statistics as in plain training (each of the
    # labeled, unlabeled and fake batches passes separately, with its own statistics); "frozen" keeps the
    # pretrained running statistics (eval-mode BN for every batch, in both runs). "train" by measurement:
    # 97.2% against 88.3% for "frozen" on the transfer bench (bench/RESULTS.md, "ssgan on images").
    batch_norm: Literal["frozen", "train"] = "train"
    ema_decay: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.999  # EMA of classifier weights for evaluation; 0 = off
    run_control: bool = True  # also train the supervised-only control with the same budget
    validation_fraction: Annotated[float, Field(gt=0.0, lt=0.9)] = 0.2  # split off when no validation set is given
    eval_every: Interval = 500  # steps between evaluations
    checkpoint_every: Interval = 500  # steps between checkpoints
    keep_checkpoints: Annotated[int, Field(ge=1, le=1000)] = 3  # newest checkpoints kept on disk
    early_stopping: EarlyStopping | None = None  # None: run all `steps`
    log_every: Interval = 50  # steps between progress reports (the only host syncs)
    deterministic: bool = False  # torch deterministic algorithms (bit-exact resume on CPU)
    text: TextOptions = Field(default_factory=TextOptions)  # text datasets only (GAN-BERT): ganft_core/text_config.py

    def resolved_unsupervised_weight(self, *, image: bool) -> float:
        """`unsupervised_weight`, or its default for the data: 0.3 on images, 1.0 on feature vectors and text."""
        if self.unsupervised_weight is not None:
            return self.unsupervised_weight
        return UNSUPERVISED_WEIGHT_IMAGES if image else 1.0


# Default weight of the GAN terms on images (input-space G). At 1.0 they cost Fashion-MNIST 1.5 points
# against the control at 2000 steps; 0.3 kept the GAN's gain on digits 1×8×8 (+2.3 over the control, 3 seeds,
# against +1.8 at 1.0) and on the transfer task. bench/RESULTS.md, "ssgan on images".
UNSUPERVISED_WEIGHT_IMAGES = 0.3


class AdaptHyperparameters(_Strict):
    """Few-shot adaptation of a pretrained GAN: FreezeD, DiffAugment, ADA, R1, EMA of G."""

    steps: Steps = 2000  # optimisation steps (one D step + one G step each)
    batch_size: Batch = 32  # real and generated images per step
    lr_g: LearningRate = 2e-4  # Adam learning rate of G
    lr_d: LearningRate = 2e-4  # Adam learning rate of D
    beta1: Beta = 0.0  # Adam beta1 (StyleGAN2-ADA uses 0)
    beta2: Beta = 0.99  # Adam beta2
    z_dim: Annotated[int, Field(ge=1, le=4096)] = 64  # latent size when training from scratch (a base G has its own)
    # G and D when no base model (registry names); None picks by image size (registry.default_gan_for)
    generator_architecture: Literal["dcgan_g", "conv_g", "mlp_g"] | None = None
    discriminator_architecture: Literal["dcgan_d", "conv_d", "mlp_d"] | None = None
    freeze_d_blocks: Annotated[int, Field(ge=0, le=64)] = 0  # FreezeD: lowest D blocks kept frozen
    # data larger than the base model's images: "resize" them (antialiased bilinear, in training and for
    # FID/KID alike) or take "random_crop"s in training and the centre crop for FID/KID; never at ingest
    large_images: Literal["resize", "random_crop"] = "resize"
    # DiffAugment ops (Zhao et al. 2020) on every D input, real and fake, D and G steps; [] = none
    diffaugment: list[Literal["color", "translation", "cutout"]] = ["color", "translation", "cutout"]
    ada: bool = True  # adaptive augmentation probability (Karras et al. 2020)
    ada_target: Annotated[float, Field(ge=0.0, le=1.0)] = 0.6  # target of E[sign(D(real))]
    ada_interval: Interval = 4  # steps between p updates
    ada_speed_images: Annotated[int, Field(ge=1, le=10_000_000)] = 20_000  # images for p to move 0 -> 1
    # probability of each augmentation per image: the initial p under ADA, the fixed p without;
    # None = 0 under ADA (p grows as D overfits), 1 without (plain DiffAugment, every image augmented)
    augment_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    r1_gamma: Annotated[float, Field(ge=0.0, le=1000.0)] = 0.1  # R1 penalty weight; 0 = off
    r1_every: Interval = 4  # lazy R1: apply every N steps, scaled by N
    ema_decay: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.999  # EMA of G weights; 0 = off
    eval_every: Interval = 500  # steps between FID/KID evaluations and sample grids
    eval_samples: Annotated[int, Field(ge=16, le=100_000)] = 1000  # generated images per FID/KID
    checkpoint_every: Interval = 500  # steps between checkpoints
    log_every: Interval = 50  # steps between progress reports
    early_stopping: EarlyStopping | None = None  # None: run all `steps`; needs FID (an evaluator)
    deterministic: bool = False  # torch deterministic algorithms


HYPERPARAMETERS: dict[str, type[_Strict]] = {"ssgan": SsganHyperparameters, "adapt": AdaptHyperparameters}


class TrainSpec(_Strict):
    """What `python -m ganft_core train SPEC.json` reads: the training part of a JobCreate."""

    method: Method
    hyperparameters: SsganHyperparameters | AdaptHyperparameters | dict[str, Any] = Field(default_factory=dict)
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0

    @model_validator(mode="before")
    @classmethod
    def _parse_hyperparameters(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("method") in HYPERPARAMETERS:
            hp = data.get("hyperparameters") or {}
            if isinstance(hp, dict):
                try:
                    parsed = HYPERPARAMETERS[data["method"]].model_validate(hp)
                except ValidationError as exc:
                    # Re-raise with locations under `hyperparameters.` so a 422 names the real field.
                    errors: list[Any] = [
                        {"type": e["type"], "loc": ("hyperparameters", *e["loc"]), "input": e["input"]}
                        | ({"ctx": e["ctx"]} if "ctx" in e else {})
                        for e in exc.errors()
                    ]
                    raise ValidationError.from_exception_data(cls.__name__, errors) from None
                data = {**data, "hyperparameters": parsed}
        return data

    @model_validator(mode="after")
    def _check_method_matches(self) -> TrainSpec:
        expected = HYPERPARAMETERS[self.method]
        if not isinstance(self.hyperparameters, expected):
            raise ValueError(f"hyperparameters do not match method {self.method!r}")
        return self
