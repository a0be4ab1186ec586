"""Representative inputs of Tidal's sample models (examples/), so `--sample NAME` sends what the model is for."""

from __future__ import annotations

from typing import Callable

import numpy as np

from tidal.errors import UserError

Tensors = dict[str, tuple[str, np.ndarray]]

# Reviews in the style of examples/sentiment's data: a mix of plain verdicts, negations and contrasts.
_REVIEWS = [
    "great movie, I loved every minute of it",
    "terrible service, never again",
    "the food was not bad at all",
    "the plot was slow but the ending was wonderful",
    "boring and far too long",
    "friendly staff and a lovely room",
    "it was fine, nothing special",
    "the battery died after two days",
]

# BERT's uncased vocabulary (all-MiniLM-L6-v2): size and special tokens.
_VOCAB, _CLS, _SEP = 30522, 101, 102


def _half_plus_two(batch: int) -> Tensors:
    return {"x": ("FP32", np.arange(1, batch + 1, dtype=np.float32))}


def _sentiment(batch: int) -> Tensors:
    texts = [_REVIEWS[i % len(_REVIEWS)] for i in range(batch)]
    return {"text": ("BYTES", np.array(texts, dtype=object))}


def _minilm(batch: int, seq_len: int = 128) -> Tensors:
    # Same recipe as examples/minilm's sample_request: ids from 1000 up are ordinary word pieces.
    ids = np.random.default_rng(0).integers(1000, _VOCAB, size=(batch, seq_len), dtype=np.int64)
    ids[:, 0], ids[:, -1] = _CLS, _SEP
    return {"input_ids": ("INT64", ids), "attention_mask": ("INT64", np.ones((batch, seq_len), dtype=np.int64))}


SAMPLES: dict[str, Callable[[int], Tensors]] = {
    "half_plus_two": _half_plus_two,
    "sentiment": _sentiment,
    "minilm": _minilm,
}


def sample_inputs(name: str, batch: int) -> Tensors:
    try:
        make = SAMPLES[name]
    except KeyError:
        raise UserError(f"no sample inputs for {name!r}: known samples are {', '.join(SAMPLES)}") from None
    return make(batch)
