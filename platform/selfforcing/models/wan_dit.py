"""The Wan2.1 text-to-video DiT, bidirectional or block-causal, with an incremental KV-cache path.

Module and parameter names match Wan2.1's original checkpoints (``blocks.{i}.self_attn.q.weight``,
``head.modulation`` ...), so ``load_state_dict(strict=True)`` takes them unchanged. Every size comes from
``ModelConfig``. Numerics follow the reference: timestep sinusoids in float64, norms and adaLN modulation
in float32, residual stream in float32, linear layers in the parameter dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config.schema import ModelConfig
from .attention import AttentionPattern, attention, chunked_attention, resolve_backend
from .checkpointing import CachePins, ReplayFlag, checkpoint_block, guarded_write
from .kv_cache import CacheStep, KVCache
from .rope import apply_rope, rope_table

SelfAttend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
TextKV = Callable[[nn.Module], tuple[torch.Tensor, torch.Tensor]]


def timestep_sinusoid(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Wan's timestep features: [cos(t w_k)] ++ [sin(t w_k)], w_k = 10000^(-k/half), in float64."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    angles = t.to(torch.float64)[..., None] * freqs
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def _linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return layer(x.to(layer.weight.dtype))


class WanRMSNorm(nn.Module):
    """RMSNorm over the full width, computed in float32, per-channel weight."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.weight


class WanLayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 (affine only where Wan has one: ``norm3``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps)


class WanAttention(nn.Module):
    """q/k/v/o projections with RMSNorm on q and k; the attention itself is supplied by the caller."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = WanRMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.norm_k = WanRMSNorm(dim, eps) if qk_norm else nn.Identity()

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1))

    def project_kv(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values [B, L, H, D] of ``source`` (no RoPE)."""
        k = self.heads(self.norm_k(_linear(self.k, source)))
        return k, self.heads(_linear(self.v, source))


class WanSelfAttention(WanAttention):
    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], attend: SelfAttend):
        q = apply_rope(self.heads(self.norm_q(_linear(self.q, x))), *rope)
        k, v = self.project_kv(x)
        out = attend(q, apply_rope(k, *rope), v)
        return _linear(self.o, out.flatten(2))


class WanCrossAttention(WanAttention):
    def forward(self, x: torch.Tensor, text_kv: TextKV, backend: str) -> torch.Tensor:
        q = self.heads(self.norm_q(_linear(self.q, x)))
        k, v = text_kv(self)
        return _linear(self.o, attention(q, k, v, backend).flatten(2))


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, frames: int) -> torch.Tensor:
    """adaLN per frame: x [B, F*T, C], shift/scale [B, F, C]."""
    xs = x.unflatten(1, (frames, -1))
    return (xs * (1 + scale[:, :, None]) + shift[:, :, None]).flatten(1, 2)


def _gate(y: torch.Tensor, gate: torch.Tensor, frames: int) -> torch.Tensor:
    return (y.float().unflatten(1, (frames, -1)) * gate[:, :, None]).flatten(1, 2)


def _residual_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x + y in the residual stream's dtype (``x``'s), rounded once: float32 by default, the parameter
    dtype under ``WanDiT.residual_dtype`` (the opt-in faster precision mode)."""
    return x + y if x.dtype == y.dtype else (x.float() + y.float()).to(x.dtype)


class WanBlock(nn.Module):
    """Self-attention, text cross-attention and FFN, each wrapped in Wan's adaLN modulation."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.norm1 = WanLayerNorm(d, cfg.eps, elementwise_affine=False)
        self.self_attn = WanSelfAttention(d, cfg.num_heads, cfg.qk_norm, cfg.eps)
        self.norm3 = (
            WanLayerNorm(d, cfg.eps, elementwise_affine=True) if cfg.cross_attn_norm else nn.Identity()
        )
        self.cross_attn = WanCrossAttention(d, cfg.num_heads, cfg.qk_norm, cfg.eps)
        self.norm2 = WanLayerNorm(d, cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(d, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, d))
        self.modulation = nn.Parameter(torch.randn(1, 6, d) / d**0.5)

    def forward(self, x, e0, rope, attend: SelfAttend, text_kv: TextKV, backend: str) -> torch.Tensor:
        """x [B, F*T, C] in the residual dtype (float32 by default), e0 [B, F, 6, C] float32."""
        frames = e0.shape[1]
        m = (self.modulation.float()[:, None] + e0).unbind(dim=2)
        y = self.self_attn(_modulate(self.norm1(x), m[0], m[1], frames), rope, attend)
        x = _residual_add(x, _gate(y, m[2], frames))
        x = _residual_add(x, self.cross_attn(self.norm3(x).float(), text_kv, backend).float())
        y = _linear(self.ffn[2], self.ffn[1](_linear(self.ffn[0], _modulate(self.norm2(x), m[3], m[4], frames))))
        return _residual_add(x, _gate(y, m[5], frames))


class WanHead(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm = WanLayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(cfg.dim, math.prod(cfg.patch_size) * cfg.out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """x [B, F*T, C], e [B, F, C] -> [B, F*T, prod(patch)*out_dim]."""
        shift, scale = (self.modulation.float()[:, None] + e[:, :, None]).unbind(dim=2)
        return _linear(self.head, _modulate(self.norm(x), shift, scale, e.shape[1]))


class WanDiT(nn.Module):
    """Wan2.1 DiT predicting the flow ``v = eps - x0`` for latents [B, F, C, H, W].

    Three ways to call it:
    - ``model(x, t, text)``: bidirectional (teacher, critic).
    - ``model(x, t, text, frames_per_chunk=k, window_frames=L, sink_frames=S)``: block-causal over
      the whole sequence (training).
    - ``model(chunk, t, text, kv_cache=cache, start_frame=i)``: one chunk attending to the cache
      (generation); the chunk's keys/values are written at ``start_frame``.
    """

    def __init__(self, config: ModelConfig, attention_backend: str = "auto") -> None:
        super().__init__()
        self.config = cfg = config
        self.attention_backend = attention_backend
        self.gradient_checkpointing = False
        # float32 (Wan's numerics); inference may opt into the parameter dtype (inference/precision.py).
        self.residual_dtype = torch.float32
        self.patch_embedding = nn.Conv3d(cfg.in_dim, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(
            nn.Linear(cfg.text_dim, cfg.dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.dim, cfg.dim)
        )
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(cfg.dim, 6 * cfg.dim))
        self.blocks = nn.ModuleList(WanBlock(cfg) for _ in range(cfg.num_layers))
        self.head = WanHead(cfg)

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_wan_config(cls, wan_config: dict, **kwargs) -> WanDiT:
        """Build from the fields of a Wan2.1 ``config.json`` (private ``_*`` keys ignored)."""
        from .checkpoints import model_config_from_wan

        return cls(model_config_from_wan(wan_config), **kwargs)

    @classmethod
    def from_pretrained(cls, path, which: str = "generator_ema", **kwargs) -> WanDiT:
        """Load a Wan2.1 directory (config.json + safetensors) or a Self Forcing ``.pt`` checkpoint."""
        from .checkpoints import load_wan_dit

        return load_wan_dit(path, which=which, **kwargs)

    @torch.no_grad()
    def init_weights(self) -> WanDiT:
        """Wan's initialisation for training from scratch: xavier-uniform linears and patch embedding,
        N(0, 0.02) text/time embeddings, zero biases and a zero output head (so training starts from a
        model predicting zero flow). Loaded checkpoints never need it."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.patch_embedding.weight.flatten(1))
        for m in [*self.text_embedding.modules(), *self.time_embedding.modules()]:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
        nn.init.zeros_(self.head.head.weight)
        return self

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Keep only each block's input [B, F*T, dim] and rerun the block in backward (one extra forward
        per grad-carrying call). Exact, also through a KV cache: ``models/checkpointing.py`` says why."""
        self.gradient_checkpointing = enabled

    def new_kv_cache(
        self,
        batch_size: int,
        window_frames: int | None = None,
        sink_frames: int = 0,
        max_frames: int | None = None,
    ) -> KVCache:
        """An empty cache for ``batch_size`` streams; buffers are allocated on the first chunk."""
        p = next(self.parameters())
        cfg = self.config
        return KVCache(
            num_layers=cfg.num_layers, batch_size=batch_size, num_heads=cfg.num_heads,
            head_dim=cfg.head_dim, window_frames=window_frames, sink_frames=sink_frames,
            max_frames=max_frames, dtype=p.dtype, device=p.device,
        )

    # ------------------------------------------------------------------ pieces of the forward
    def embed_text(self, text: torch.Tensor) -> torch.Tensor:
        """[B, L<=text_len, text_dim] -> [B, text_len, dim], zero-padding to text_len as Wan does."""
        cfg = self.config
        if text.ndim != 3 or text.shape[-1] != cfg.text_dim:
            raise ValueError(f"text must be [B, L, {cfg.text_dim}], got {tuple(text.shape)}")
        if text.shape[1] > cfg.text_len:
            raise ValueError(f"text has {text.shape[1]} tokens, more than text_len={cfg.text_len}")
        if text.shape[1] < cfg.text_len:
            text = F.pad(text, (0, 0, 0, cfg.text_len - text.shape[1]))
        return _linear(self.text_embedding[2], self.text_embedding[1](_linear(self.text_embedding[0], text)))

    def embed_time(self, timesteps: torch.Tensor, batch: int, frames: int):
        """Per-frame timesteps [B, F] (or [B] / scalar) -> e [B, F, C], e0 [B, F, 6, C] in float32."""
        t = torch.as_tensor(timesteps, device=self.patch_embedding.weight.device)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.ndim == 1:
            t = t[:, None].expand(batch, frames)
        if t.shape != (batch, frames):
            raise ValueError(f"timesteps must be [B, F] = [{batch}, {frames}], got {tuple(t.shape)}")
        feats = timestep_sinusoid(t, self.config.freq_dim).float()
        lin1, act, lin2 = self.time_embedding
        e = lin2(act(lin1(feats.to(lin1.weight.dtype)))).float()
        e0 = _linear(self.time_projection[1], self.time_projection[0](e)).float()
        return e, e0.unflatten(-1, (6, self.config.dim))

    def _patchify(self, latents: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        if latents.ndim != 5 or latents.shape[2] != self.config.in_dim:
            raise ValueError(f"latents must be [B, F, {self.config.in_dim}, H, W], got {tuple(latents.shape)}")
        _, ph, pw = self.config.patch_size
        if latents.shape[3] % ph or latents.shape[4] % pw:
            raise ValueError(f"latent H, W {tuple(latents.shape[3:])} must be multiples of the patch {(ph, pw)}")
        w = self.patch_embedding.weight
        x = self.patch_embedding(latents.transpose(1, 2).to(w.dtype))  # [B, C, F, h, w]
        grid = tuple(x.shape[2:])
        return x.flatten(2).transpose(1, 2).to(self.residual_dtype), grid

    def _unpatchify(self, out: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        b = out.shape[0]
        f, h, w = grid
        pt, ph, pw = self.config.patch_size
        c = self.config.out_dim
        out = out.view(b, f, h, w, pt, ph, pw, c)
        out = torch.einsum("bfhwpqrc->bfpchqwr", out)
        return out.reshape(b, f * pt, c, h * ph, w * pw)

    def _rope(self, start_frame: int | Sequence[int], grid, batch: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) [L, c] for one start frame, or [B, L, c] when rows sit at different frames."""
        cfg = self.config
        if isinstance(start_frame, int) or len(set(start_frame)) == 1:
            first = start_frame if isinstance(start_frame, int) else start_frame[0]
            return rope_table(first, *grid, cfg.head_dim, cfg.rope_theta, device, cfg.rope_spatial_period,
                               cfg.rope_time_scale)
        if len(start_frame) != batch:
            raise ValueError(f"got {len(start_frame)} start frames for a batch of {batch}")
        per_row = [rope_table(s, *grid, cfg.head_dim, cfg.rope_theta, device, cfg.rope_spatial_period,
                               cfg.rope_time_scale) for s in start_frame]
        return torch.stack([c for c, _ in per_row]), torch.stack([s for _, s in per_row])

    def _backend(self) -> str:
        w = self.patch_embedding.weight
        return resolve_backend(self.attention_backend, w.device, w.dtype)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        text: torch.Tensor,
        *,
        frames_per_chunk: int | None = None,
        window_frames: int | None = None,
        sink_frames: int = 0,
        kv_cache: KVCache | None = None,
        start_frame: int | Sequence[int] = 0,
        return_features: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Flow prediction [B, F, C, H, W] for latents [B, F, C, H, W] at raw timesteps [B, F] (0..1000).

        ``text`` [B, L, text_dim] is zero-padded to ``text_len``; with a ``kv_cache`` its projected
        keys/values are computed once per prompt (detected by tensor identity) and reused.
        ``return_features=True`` also returns the last block's hidden states [B, F*T, dim] (float32),
        which a GAN discriminator head classifies.
        """
        b, frames = latents.shape[:2]
        backend = self._backend()
        checkpointed = self.gradient_checkpointing and torch.is_grad_enabled()
        replay = ReplayFlag()
        x, grid = self._patchify(latents)
        tokens_per_frame = grid[1] * grid[2]
        e, e0 = self.embed_time(timesteps, b, frames)
        rope = self._rope(start_frame, grid, b, x.device)

        if kv_cache is None:
            pattern = AttentionPattern(frames_per_chunk, window_frames, sink_frames)
            context = self.embed_text(text)

            def make_attend(_: int) -> SelfAttend:
                return lambda q, k, v: chunked_attention(q, k, v, pattern, tokens_per_frame, backend)

            def make_text_kv(_: int) -> TextKV:
                return lambda attn: attn.project_kv(context)

            step = None
        else:
            if frames_per_chunk is not None or window_frames is not None or sink_frames:
                raise ValueError("with kv_cache, the window and sinks are the cache's (new_kv_cache args)")
            if kv_cache.active_rows != b:
                raise ValueError(f"kv_cache has {kv_cache.active_rows} active rows, latents have batch {b}")
            step = kv_cache.begin(start_frame, frames, tokens_per_frame)
            make_attend, make_text_kv = self._cached_attention(kv_cache, step, text, backend, checkpointed, replay)

        for i, block in enumerate(self.blocks):
            args = (e0, rope, make_attend(i), make_text_kv(i), backend)
            x = checkpoint_block(block, x, *args, replay=replay) if checkpointed else block(x, *args)
        if step is not None:
            kv_cache.commit(step)
        out = self._unpatchify(self.head(x, e), grid).to(latents.dtype)
        return (out, x) if return_features else out

    def _cached_attention(self, cache: KVCache, step: CacheStep, text: torch.Tensor, backend: str,
                          checkpointed: bool, replay: ReplayFlag):
        """Per-layer attention closures for the incremental path.

        Without grad, the chunk is written first and attends to the buffer prefix (no copies). With
        grad, the chunk's own keys keep their graph and only the earlier frames come from the
        (detached) cache, which is how Self Forcing stops gradients flowing into earlier chunks.
        Checkpointed (``models/checkpointing.py`` says why this is exact), the earlier frames come from a
        pin that keeps them as they are now, and the recomputation in backward does not write the cache.
        """
        grad = torch.is_grad_enabled()
        cache.use_text(text)
        # Under grad the prompt tokens are an input of every block, so they are computed here, outside
        # any checkpointed region; without grad only layers missing cached text K/V need them.
        context: list[torch.Tensor] = [self.embed_text(text)] if grad else []
        pins = CachePins.of(cache, create=checkpointed)
        pinned = [pins.pin(cache, layer, step) for layer in range(len(self.blocks))] if checkpointed else []

        def context_tokens() -> torch.Tensor:
            if not context:
                context.append(self.embed_text(text))
            return context[0]

        def make_attend(layer: int) -> SelfAttend:
            def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
                if not replay.active:  # the recomputation in backward must not write again
                    guarded_write(cache, pins, layer, step, k, v)
                if checkpointed:
                    earlier = pinned[layer].tensors()
                elif not (grad and (k.requires_grad or q.requires_grad)):
                    kc, vc, mask = cache.visible(layer, step)
                    return attention(q, kc, vc, backend, mask)
                else:
                    earlier = cache.context(layer, step)
                if earlier is not None:
                    k = torch.cat([earlier[0], k], dim=1)
                    v = torch.cat([earlier[1], v], dim=1)
                return attention(q, k, v, backend)

            return attend

        def make_text_kv(layer: int) -> TextKV:
            def text_kv(attn: WanAttention) -> tuple[torch.Tensor, torch.Tensor]:
                if grad:  # keep the text path in the graph when training through the cache
                    return attn.project_kv(context_tokens())
                if cache.text_kv[layer] is None:
                    cache.text_kv[layer] = attn.project_kv(context_tokens())
                return cache.text_kv[layer]

            return text_kv

        return make_attend, make_text_kv
