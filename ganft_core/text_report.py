"""nearest_texts.json: what a GAN-BERT generator makes, told by the real training texts nearest to it.

Text has no sample grid: a generated sentence vector cannot be read. Instead a few vectors from fixed noise are
set beside the training texts whose sentence vectors (the final encoder's, mean-pooled) are nearest by cosine,
with D's class prediction and D(x) = Z/(Z+1) for each. Cheap (one forward pass over at most NEAREST_POOL
texts) and telling: fakes near real reviews of one class, with a high D(x), mean G learned the data's manifold;
fakes far from everything, with D(x) near 0, mean D wins easily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ganft_core.data.text import TextDataset
from ganft_core.models.minilm import MiniLMClassifier

if TYPE_CHECKING:
    from ganft_core.text_trunk import Trunk

SAMPLES = 8  # generated vectors reported
NEIGHBOURS = 3  # nearest texts per vector
NEAREST_POOL = 1000  # training texts searched: labeled ones first, then unlabeled ones in order
TEXT_CHARS = 300  # characters of each text shown


@torch.inference_mode()
def nearest_texts(
    net: MiniLMClassifier,
    gen: nn.Module,
    trunk: Trunk,
    train: TextDataset,
    *,
    seed: int,
    z_dim: int,
    device: torch.device,
) -> dict[str, Any]:
    """The JSON document (see the module docstring); `net`, `gen` are left in eval mode."""
    net.eval()
    gen.eval()
    labeled = torch.from_numpy(train.labeled)
    order = torch.cat([torch.nonzero(labeled).flatten(), torch.nonzero(~labeled).flatten()])[:NEAREST_POOL]
    real = torch.cat([trunk.sentence(net, order[i : i + 256]).float() for i in range(0, len(order), 256)])
    z = torch.randn(SAMPLES, z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    fake = gen(z).float()
    _, logits = net.from_pooled(fake)
    probs = logits.float().softmax(dim=1)
    p_real = torch.sigmoid(torch.logsumexp(logits.float(), dim=1))  # Z/(Z+1)
    _, logits_real = net.from_pooled(real)
    p_real_of_reals = torch.sigmoid(torch.logsumexp(logits_real.float(), dim=1))
    cosine = F.normalize(fake, dim=1) @ F.normalize(real, dim=1).T  # SAMPLES × pool
    top = cosine.topk(min(4 * NEIGHBOURS, len(order)), dim=1)  # (then duplicates of one text are skipped)
    samples = []
    for i in range(SAMPLES):
        nearest: list[dict[str, Any]] = []
        for score, j in zip(top.values[i].tolist(), top.indices[i].tolist(), strict=True):
            k = int(order[j])
            if len(nearest) == NEIGHBOURS or any(n["text"] == train.texts[k][:TEXT_CHARS] for n in nearest):
                continue
            label = int(train.y[k])
            nearest.append(
                {
                    "text": train.texts[k][:TEXT_CHARS],
                    "label": train.classes[label] if label >= 0 else None,
                    "cosine": round(score, 4),
                }
            )
        samples.append(
            {
                "sample": i,
                "predicted_class": train.classes[int(probs[i].argmax())],
                "class_probabilities": {c: round(float(p), 4) for c, p in zip(train.classes, probs[i], strict=True)},
                "d_real_probability": round(float(p_real[i]), 4),
                "nearest": nearest,
            }
        )
    return {
        "note": "generated sentence vectors (fixed noise) and the training texts nearest to them by cosine "
        "similarity of the final encoder's mean-pooled vectors; d_real_probability is D(x) = Z/(Z+1)",
        "searched_texts": len(order),
        "mean_d_real_probability_of_real_texts": round(float(p_real_of_reals.mean()), 4),
        "samples": samples,
    }
