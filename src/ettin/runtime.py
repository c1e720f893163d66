"""How a model runs, not what it is: the attention kernel, the fused loss's chunk, and how its blocks compile. Never
part of a model's config, a checkpoint or an export (`ettin.config.RUNTIME_KEYS`: where older runs kept them).

One small object that training (`train.attn_backend`, `train.loss_chunk_size`, `train.compile`: ettin.train.build),
evaluation (a model loaded to be scored keeps the default, "auto") and decoding (`ettin.inference.Decoder` reads its
model's) share: `EttinModel(config, runtime=Runtime(...))` holds one, `model.runtime`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ettin.attention import resolve_backend
from ettin.config import LOSS_CHUNK_SIZE


@dataclass
class Runtime:
    attn_backend: str = "auto"  # auto | one of ettin.attention.BACKENDS (auto: by device and dtype)
    loss_chunk_size: int = LOSS_CHUNK_SIZE  # tokens per chunk of the fused head + cross-entropy (ettin.losses)

    def backend(self, device: torch.device, dtype: torch.dtype) -> str:
        """The kernel `attn_backend` means for a forward whose activations are `dtype` on `device`: under autocast, the
        autocast dtype (what q, k and v will be). Resolved once, before the blocks (which may be compiled): they see
        a plain name."""
        if torch.is_autocast_enabled(device.type):
            dtype = torch.get_autocast_dtype(device.type)
        return resolve_backend(self.attn_backend, device, dtype)


def compile_blocks(blocks, **kwargs) -> None:
    """torch.compile each block in place (elementwise work fuses; layout, loss and cache stay eager). Each block is
    its own compiled frame: dynamo's process-wide recompile limit is raised to allow one entry per block (its default,
    8, is less than the blocks of the larger sizes)."""
    import torch._dynamo

    cfg = torch._dynamo.config
    cfg.recompile_limit = max(cfg.recompile_limit, 2 * len(blocks))
    for block in blocks:
        block.compile(**kwargs)
