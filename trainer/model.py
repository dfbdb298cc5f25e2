"""GPT-2 from scratch, in one file.

The architecture is OpenAI's GPT-2 (pre-LayerNorm blocks, tanh GELU, learned positions, tied input and
output embeddings). Attention goes through ``scaled_dot_product_attention`` so that PyTorch picks the fastest
kernel for the device, and an optional key/value cache lets generation decode one token at a time.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class GPTConfig:
    """Shape of a GPT-2 model; the defaults are the 124M model."""

    vocab_size: int = 50257
    context_length: int = 1024
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.0
    qkv_bias: bool = True
    tied_head: bool = True  # GPT-2's own layout; the book's chapter 7 model has an untied output head

    @property
    def head_dim(self) -> int:
        return self.emb_dim // self.n_heads

    def to_dict(self) -> dict:
        """The config as JSON; ``tied_head`` only when untied, so that files written before it existed (and
        the run identities compared on resume) read the same."""
        data = asdict(self)
        if self.tied_head:
            del data["tied_head"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> GPTConfig:
        """Build a config from JSON, refusing unknown keys so a foreign file is not silently misread."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**data)


CONFIGS: dict[str, GPTConfig] = {
    # A few-MB model for tests and the offline demo: same tokenizer and vocabulary as GPT-2.
    "tiny": GPTConfig(context_length=256, emb_dim=64, n_heads=4, n_layers=2),
    "gpt2": GPTConfig(emb_dim=768, n_heads=12, n_layers=12),  # 124M
    "gpt2-medium": GPTConfig(emb_dim=1024, n_heads=16, n_layers=24),  # 355M
    "gpt2-large": GPTConfig(emb_dim=1280, n_heads=20, n_layers=36),  # 774M
    "gpt2-xl": GPTConfig(emb_dim=1600, n_heads=25, n_layers=48),  # 1558M
}


class KVCache:
    """Preallocated keys and values of every layer, filled as decoding goes on.

    Buffers have shape ``[batch, heads, max_len, head_dim]``; ``length`` is how many positions are filled.
    """

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int, device, dtype: torch.dtype):
        shape = (batch_size, config.n_heads, max_len, config.head_dim)
        self.keys = [torch.empty(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.values = [torch.empty(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.max_len = max_len
        self.length = 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's keys and values for ``layer``; return all keys and values so far."""
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} positions needed, {self.max_len} allocated")
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Drop finished sequences from the batch so they stop costing compute."""
        self.keys = [k[rows] for k in self.keys]
        self.values = [v[rows] for v in self.values]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_heads = config.n_heads
        self.drop_rate = config.drop_rate
        self.c_attn = nn.Linear(config.emb_dim, 3 * config.emb_dim, bias=config.qkv_bias)
        self.c_proj = nn.Linear(config.emb_dim, config.emb_dim)
        self.resid_drop = nn.Dropout(config.drop_rate)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None, is_causal: bool, cache: KVCache | None
    ) -> torch.Tensor:
        batch, steps, dim = x.shape
        # [batch, heads, 3, steps, head_dim] views of the fused projection: the same strides as splitting
        # and transposing each of q, k and v, in three tensor operations instead of ten (at batch 1 each
        # decoding step is small enough that such per-call overhead shows).
        qkv = self.c_attn(x).view(batch, steps, 3, self.n_heads, dim // self.n_heads).transpose(1, 3)
        q, k, v = qkv.unbind(2)
        if cache is not None:
            k, v = cache.append(self.layer, k, v)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            is_causal=is_causal,
            dropout_p=self.drop_rate if self.training else 0.0,
        )
        y = self.c_proj(y.transpose(1, 2).reshape(batch, steps, dim))
        return self.resid_drop(y) if self.training else y


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.emb_dim, 4 * config.emb_dim)
        self.c_proj = nn.Linear(4 * config.emb_dim, config.emb_dim)
        self.drop = nn.Dropout(config.drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))
        return self.drop(y) if self.training else y  # dropout is the identity in eval: skip the call


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.emb_dim, eps=1e-5)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.emb_dim, eps=1e-5)
        self.mlp = MLP(config)

    def forward(self, x, attn_mask, is_causal, cache):
        x = x + self.attn(self.ln_1(x), attn_mask, is_causal, cache)
        return x + self.mlp(self.ln_2(x))


TIED_HEAD = "lm_head.weight"  # the same tensor as wte.weight, as in GPT-2: files store it once (unless untied)


class GPT(nn.Module):
    """GPT-2 language model returning next-token logits."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.emb_dim)
        self.wpe = nn.Embedding(config.context_length, config.emb_dim)
        self.drop = nn.Dropout(config.drop_rate)
        self.h = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.emb_dim, eps=1e-5)
        self.lm_head = nn.Linear(config.emb_dim, config.vocab_size, bias=False)
        if config.tied_head:
            self.lm_head.weight = self.wte.weight  # tied, as in GPT-2
        self.apply(self._init_weights)
        # GPT-2 scales the residual projections by depth so the residual stream does not grow with layers.
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @staticmethod
    def stored_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
        """Name and shape of every tensor a weights file holds for ``config`` (all but a tied head)."""
        with torch.device("meta"):
            model = GPT(config)
        return {
            name: tuple(p.shape) for name, p in model.state_dict().items() if name != TIED_HEAD or not config.tied_head
        }

    @classmethod
    def from_tensors(cls, config: GPTConfig, tensors: dict[str, torch.Tensor]) -> GPT:
        """The model made of ``tensors`` (named as :meth:`stored_shapes`), skipping the random initialisation."""
        with torch.device("meta"):
            model = cls(config)
        if not config.tied_head:
            model.load_state_dict(tensors, strict=True, assign=True)
            return model
        model.load_state_dict({**tensors, TIED_HEAD: tensors["wte.weight"]}, strict=True, assign=True)
        model.lm_head.weight = model.wte.weight  # assign=True replaced wte's Parameter; tie the head to it again
        return model

    def untie_head(self) -> GPT:
        """Give the output head its own copy of the token embedding, as the book's ``load_weights_into_gpt``
        does (its ``GPTModel`` has a separate ``out_head``): 38.6M more trainable parameters for GPT-2 124M."""
        if self.config.tied_head:
            self.lm_head.weight = nn.Parameter(self.wte.weight.detach().clone())
            self.config = replace(self.config, tied_head=False)
        return self

    def num_parameters(self) -> int:
        """Parameter count with a tied head counted once (124M for ``gpt2``; 163M untied)."""
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        idx: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Logits ``[batch, steps, vocab]`` (``steps`` is 1 with ``last_only``).

        ``attention_mask`` ``[batch, past + steps]`` marks real tokens with 1 and padding with 0 (it covers
        the cached positions too); ``position_ids`` ``[batch, steps]`` default to consecutive positions after
        the cache. Given explicitly (left-padded batches), they must stay below the context length: padding
        makes the cache longer than any one row's sequence, so only the positions tell whether a row fits.
        """
        batch, steps = idx.shape
        past = cache.length if cache is not None else 0
        if position_ids is None:
            if past + steps > self.config.context_length:
                raise ValueError(
                    f"sequence of {past + steps} tokens exceeds the context length {self.config.context_length}"
                )
            position_ids = torch.arange(past, past + steps, device=idx.device).unsqueeze(0)
        attn_mask, is_causal = self._attention_mask(attention_mask, past, steps, idx.device)
        x = self.drop(self.wte(idx) + self.wpe(position_ids))
        for block in self.h:
            x = block(x, attn_mask, is_causal, cache)
        if cache is not None:
            cache.length += steps
        if last_only:
            x = x[:, -1:, :]
        return self.lm_head(self.ln_f(x))

    def decode(
        self, tokens: torch.Tensor, positions: torch.Tensor, cache: KVCache, padding: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits ``[batch, vocab]`` of one new token per row, in eval mode: what :meth:`forward` gives for
        ``tokens[:, None]`` with ``position_ids=positions[:, None]``, ``attention_mask=padding`` and ``cache``.

        A decoding step is small enough on the CPU that per-call overhead shows: here activations stay
        ``[batch, dim]``, no mask or positions are built, and each block's modules are called in a row
        (GPT-2 124M at batch 1: 3-5 % less time per token than :meth:`forward`, measured alternating the two).
        """
        batch, heads, head_dim = tokens.shape[0], self.config.n_heads, self.config.head_dim
        mask = None if padding is None else padding[:, None, None, :].bool()
        x = self.wte(tokens) + self.wpe(positions)
        for block in self.h:
            attn = block.attn
            q, k, v = attn.c_attn(block.ln_1(x)).view(batch, 3, heads, 1, head_dim).unbind(1)
            k, v = cache.append(attn.layer, k, v)
            x = x + attn.c_proj(F.scaled_dot_product_attention(q, k, v, attn_mask=mask).view(batch, -1))
            x = x + block.mlp(block.ln_2(x))
        cache.length += 1
        return self.lm_head(self.ln_f(x))

    @staticmethod
    def _attention_mask(padding: torch.Tensor | None, past: int, steps: int, device):
        """Boolean mask ``[batch, 1, steps, past + steps]``, or ``None`` when SDPA's causal path suffices."""
        if steps == 1:  # one new token sees every key before it: only padding needs masking
            return (None if padding is None else padding[:, None, None, :].bool()), False
        if padding is None and past == 0:
            return None, True
        total = past + steps
        query_pos = torch.arange(past, total, device=device).unsqueeze(1)
        key_pos = torch.arange(total, device=device).unsqueeze(0)
        mask = (key_pos <= query_pos).unsqueeze(0).unsqueeze(0)
        if padding is not None:
            mask = mask & padding[:, None, None, :].bool()
            # A padding query would see no key at all (NaN); let it see itself. Its output is never used.
            mask = mask | (key_pos == query_pos)
        return mask, False
