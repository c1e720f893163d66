"""Keyed randomness: values that are pure functions of (key, index), so any worker, rank or resumed run computes
the same ones without carrying generator state.

  derive_key(*parts)        a 64-bit key from printable parts (seed, phase, purpose, step, ...)
  splitmix64(x)             SplitMix64's output function (a 64-bit bijective mixer), vectorised
  stream(keys, at)          output `at` of the SplitMix64 stream seeded by each key (broadcast)
  permute(x, n, key)        a keyed bijection of [0, n): a Feistel network with cycle walking

SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014) is the
stream state_k = key + (k + 1) * GOLDEN, output_k = splitmix64(state_k); `stream` reads any outputs of it
directly, which is what makes it counter-based.
"""

from __future__ import annotations

import hashlib

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64's increment (2^64 / golden ratio)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


def derive_key(*parts: object) -> int:
    """A 64-bit key from any printable parts (seed, phase, purpose, ...)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def splitmix64(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """SplitMix64's mixer of uint64 values (wrapping arithmetic); in place when `out is x`."""
    x = np.bitwise_xor(x, x >> _S30, out=out)
    x *= _M1
    x ^= x >> _S27
    x *= _M2
    x ^= x >> _S31
    return x


def stream(keys: np.ndarray, at: np.ndarray) -> np.ndarray:
    """uint64 output `at` of the SplitMix64 stream seeded by `key`, for `keys` and `at` broadcast together
    (keys[:, None] and a (T,) `at`: (B, T))."""
    with np.errstate(over="ignore"):
        state = np.asarray(keys, dtype=np.uint64) + (np.asarray(at, dtype=np.uint64) + np.uint64(1)) * GOLDEN
    return splitmix64(state, out=state)


def permute(x: np.ndarray, n: int, key: int, rounds: int = 6) -> np.ndarray:
    """A keyed bijection of [0, n) applied to x (values < n): Feistel network on the next even power of
    two, cycle-walking until the image falls back inside [0, n). O(1) memory; vectorised."""
    x = np.asarray(x, dtype=np.uint64)
    if n <= 1:
        return x.copy()
    bits = max(2, (n - 1).bit_length())
    half = (bits + 1) // 2
    mask = np.uint64((1 << half) - 1)
    keys = [np.uint64((key + (r + 1) * int(GOLDEN)) & 0xFFFFFFFFFFFFFFFF) for r in range(rounds)]
    out = x.copy()
    todo = np.arange(len(x))
    cur = x.copy()
    with np.errstate(over="ignore"):
        while len(todo):
            left, right = cur >> np.uint64(half), cur & mask
            for k in keys:
                left, right = right, left ^ (splitmix64(right ^ k) & mask)
            cur = (left << np.uint64(half)) | right
            inside = cur < np.uint64(n)
            out[todo[inside]] = cur[inside]
            todo, cur = todo[~inside], cur[~inside]
    return out
