"""Pure random draws for decision code: a key in the policy's state goes in, a value and the next key come out."""

from __future__ import annotations

from typing import Sequence, TypeVar

T = TypeVar("T")
_MASK = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def seed_key(seed: int) -> int:
    return _splitmix64(seed & _MASK)


def below(key: int, n: int) -> tuple[int, int]:
    """A uniform integer in [0, n) and the next key (the modulo bias is below 2**-50 for small n)."""
    if n <= 0:
        raise ValueError("below() needs n > 0")
    nxt = _splitmix64(key)
    return nxt % n, nxt


def choice(key: int, items: Sequence[T]) -> tuple[T, int]:
    i, nxt = below(key, len(items))
    return items[i], nxt
