"""The encoder side of a GAN-BERT run (ganft_core/ssgan_text.py): sentence vectors through cached frozen blocks,
evaluation predictions, training mode that keeps frozen blocks in eval, AdamW groups and the lr schedule.

Kept apart from `ssgan_text.py` so that the loop there reads top to bottom.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ganft_core import run
from ganft_core.models.minilm import MiniLMClassifier
from ganft_core.text_nets import Tokens

EVAL_BATCH = 256  # texts per forward pass when evaluating (sorted by length, each batch cut to its longest)
CACHE_MAX_BYTES = 4 << 30  # frozen-block outputs are cached when all of them fit in this many bytes


class Trunk:
    """Sentence vectors of a set of texts through a net whose lowest `frozen` blocks are fixed (eval mode).

    The frozen blocks' outputs are computed the first time a text is drawn and kept (a lazy cache, N×W×H on the
    device when it fits in CACHE_MAX_BYTES): a run draws each text's frozen part once, not once a step, and the
    nets of a run (GAN, control and their EMAs) share it, since their frozen blocks are the same weights. A
    cached text was computed in another batch than a later one, so results equal the uncached ones up to
    float rounding (bit-exact resume holds for freeze_blocks 0).
    """

    def __init__(self, net: MiniLMClassifier, tokens: Tokens, frozen: int, device: torch.device) -> None:
        self.tokens, self.frozen, self.device = tokens, frozen, device
        n, width = tokens.ids.shape
        fits = n * width * net.head.in_features * 4 <= CACHE_MAX_BYTES
        self.cache = torch.zeros(n, width, net.head.in_features, device=device) if frozen and fits else None
        self.filled = torch.zeros(n, dtype=torch.bool)

    def _frozen_part(self, net: MiniLMClassifier, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return net.encode(net.embed(ids), mask, 1, self.frozen).float()

    def sentence(self, net: MiniLMClassifier, index: torch.Tensor) -> torch.Tensor:
        """N×H sentence vectors of the texts at `index` (a CPU int64 tensor)."""
        longest = int(self.tokens.lengths[index].max())
        ids, mask = (t.to(self.device, non_blocking=True) for t in self.tokens.batch(index, longest))
        if self.frozen == 0:
            states, start = net.embed(ids), 1
        elif self.cache is None:
            states, start = self._frozen_part(net, ids, mask), self.frozen
        else:
            todo = torch.unique(index[~self.filled[index]])
            if len(todo):
                width = int(self.tokens.lengths[todo].max())
                t_ids, t_mask = (t.to(self.device) for t in self.tokens.batch(todo, width))
                self.cache[todo.to(self.device), :width] = self._frozen_part(net, t_ids, t_mask)
                self.filled[todo] = True
            states, start = self.cache[index.to(self.device), :longest], self.frozen
        return net.pool(net.encode(states, mask, start), mask)


def train_mode(net: nn.Module, frozen: list[nn.Module]) -> None:
    """Training mode, except the frozen blocks: eval (no dropout), so that their cached outputs are exact."""
    net.train()
    for block in frozen:
        block.eval()


def lr_factor(step: int, total: int, warmup_fraction: float) -> float:
    """Linear warm-up over `warmup_fraction`·total steps, then linear decay to 0 at `total` (BERT's schedule)."""
    warm = int(total * warmup_fraction)
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (total - step) / max(1, total - warm))


def adamw_groups(net: MiniLMClassifier, encoder_lr: float, head_lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: encoder and head at their own lr; biases and LayerNorm weights get no weight decay."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in net.named_parameters():
        if p.requires_grad:
            no_decay = name.endswith("bias") or "LayerNorm" in name
            groups.setdefault((name.startswith("encoder."), no_decay), []).append(p)
    return [
        {"params": ps, "base_lr": encoder_lr if enc else head_lr, "weight_decay": 0.0 if nd else weight_decay}
        for (enc, nd), ps in groups.items()
    ]


@torch.inference_mode()
def predict(net: MiniLMClassifier, trunk: Trunk, device: torch.device) -> torch.Tensor:
    """Argmax class per text (N,), in eval mode, batches of similar length; the caller restores training mode."""
    net.eval()
    order = torch.argsort(trunk.tokens.lengths, stable=True)
    out = torch.empty(len(order), dtype=torch.int64)
    with run.autocast(device):  # (the frozen blocks are eval mode too: net.eval() reaches them)
        for start in range(0, len(order), EVAL_BATCH):
            index = order[start : start + EVAL_BATCH]
            out[index] = net.from_pooled(trunk.sentence(net, index))[1].argmax(dim=1).cpu()
    return out
