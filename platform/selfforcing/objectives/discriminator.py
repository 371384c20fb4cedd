"""GAN discriminator: the critic backbone (a bidirectional Wan DiT) plus a small classification head.

The head attention-pools the backbone's last hidden states with a few learned register queries (as the
release's register tokens do) and maps them to one logit per sample. Sizes come from the backbone.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.wan_dit import WanDiT


class ClassifierHead(nn.Module):
    """features [B, N, dim] -> logits [B]."""

    def __init__(self, dim: int, num_registers: int = 1) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.registers = nn.Parameter(torch.randn(num_registers, dim) / dim**0.5)
        self.mlp = nn.Sequential(nn.Linear(num_registers * dim, dim), nn.SiLU(), nn.Linear(dim, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        h = self.norm(features.to(self.registers.dtype))
        weights = torch.softmax(torch.einsum("rd,bnd->brn", self.registers, h) / h.shape[-1] ** 0.5, dim=-1)
        pooled = torch.einsum("brn,bnd->brd", weights, h).flatten(1)
        return self.mlp(pooled).squeeze(-1)


class Discriminator(nn.Module):
    """logits [B] = head(backbone features of noisy latents x_t [B, F, C, h, w] at t [B, F])."""

    def __init__(self, backbone: WanDiT, num_registers: int = 1) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = ClassifierHead(backbone.config.dim, num_registers)
        p = next(backbone.parameters())
        self.head.to(device=p.device, dtype=p.dtype)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        _, features = self.backbone(x_t, t, text, return_features=True)
        return self.head(features)
