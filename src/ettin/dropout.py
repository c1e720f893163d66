"""Dropout whose mask does not depend on the parallelism: each element's keep-or-drop is a hash of (the row's key,
its position in the row, the layer, the channel), never a draw from a rank's random stream.

With `nn.Dropout`, rank r of a 2-rank run draws its rows' masks from its own generator, so one process, DDP, FSDP2
and another micro-batch size train on different masks and their losses part after the first step. Here the training
loop gives every row of the global batch a key (`ettin.data.collate.dropout_keys`: SplitMix64 of (seed, phase, step,
global row), as the rows' masking keys), and the model derives the mask from it: the same tokens get the same mask on
any number of ranks, in any micro-batch, and on resume (no random state to restore).

The same distribution as `nn.Dropout` (keep with probability 1 - p to 2^-24, survivors scaled by 1 / (1 - p)); only
the stream differs. The hash is integer arithmetic that stays below 2^63 (no wrapping): a multiply-xorshift round
(the 32-bit mixer's multiplier 0x45D9F3B) folded modulo the Mersenne prime 2^31 - 1, three rounds an element
(with one, neighbouring channels' masks correlated at -0.09; tests/test_train_parity.py measures it). On a
GPU it fuses into one kernel under torch.compile; in eager CPU training it costs a few elementwise passes a layer
(bench/bench_dropout.py: 1.02x a demo-shape step against `nn.Dropout`).
"""

from __future__ import annotations

import torch

_P = (1 << 31) - 1  # Mersenne prime: x mod P by shifts and masks
_MUL = 0x45D9F3B
_BITS = 24  # resolution of the keep probability


def _fold(x: torch.Tensor) -> torch.Tensor:
    x = (x & _P) + (x >> 31)
    return (x & _P) + (x >> 31)  # below 2^31 + 1


def _mix(x: torch.Tensor, y) -> torch.Tensor:
    """One hash round of values below 2^32 (x) and 2^31 (y): below 2^59 before the fold."""
    return _fold((x ^ (x >> 15)) * _MUL + y)


def token_keys(keys: torch.Tensor, seq_len: int) -> torch.Tensor:
    """(B, seq_len) int64 keys of every position of rows with `keys` (B, 2)."""
    t = torch.arange(seq_len, device=keys.device)
    return _mix(_mix(keys[:, :1], t[None, :]), keys[:, 1:])


def keyed_dropout(x: torch.Tensor, tokens: torch.Tensor, layer: int, p: float) -> torch.Tensor:
    """`x` (*lead, C) with each element dropped with probability `p` by the hash of (its token's key `tokens`
    (*lead), `layer`, its channel), the survivors scaled by 1 / (1 - p)."""
    channels = torch.arange(x.shape[-1], device=x.device) + ((layer + 1) << 16)
    h = _mix(_mix(_mix(tokens[..., None], channels), layer), _P >> 3)  # fewer rounds: neighbours correlate
    keep = (h & ((1 << _BITS) - 1)) >= round(p * (1 << _BITS))
    return x * (keep.to(x.dtype) * (1.0 / (1.0 - p)))
