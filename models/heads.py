"""Classifier heads on Presto embeddings."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class HeadConfig:
    in_features: int = 128  # Presto embedding size
    hidden: int = 64
    dropout: float = 0.2
    n_classes: int = 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadConfig:
        return cls(**{k: data[k] for k in ("in_features", "hidden", "dropout", "n_classes")})


class MLPHead(nn.Module):
    """embedding -> logits ``(N, n_classes)``: one hidden GELU layer, small enough that ~1000 labelled samples
    do not overfit it badly; ``hidden=0`` gives a linear probe."""

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        if config.hidden > 0:
            self.net = nn.Sequential(
                nn.Dropout(config.dropout),
                nn.Linear(config.in_features, config.hidden),
                nn.GELU(),
                nn.Dropout(config.dropout),
                nn.Linear(config.hidden, config.n_classes),
            )
        else:
            self.net = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.in_features, config.n_classes))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net(embedding)  # nn.Module.__call__ is typed Any
        return logits
