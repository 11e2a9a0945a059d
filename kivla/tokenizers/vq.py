"""VQ tokens: a small learned codebook over temporal patches (P steps × D dims) of the chunk.

A chunk [H, D] is cut into H/P patches of P·D values; each patch becomes the id of its nearest
codeword, so every chunk is exactly H/P tokens. The codebook is fit by k-means (k-means++ seeding,
Lloyd steps, dead codewords re-seeded) in torch, imported only inside `fit`; encode and decode are
numpy. Saved as `codebook.safetensors` next to `tokenizer.json`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from einops import rearrange
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from kivla.io import write_bytes
from kivla.tokenizers.base import (
    ActionTokenizer,
    DecodeResult,
    check_chunks,
    check_fit_chunks,
    pack_sequences,
    register,
    split_valid_ids,
)

CODEBOOK_FILE = "codebook.safetensors"


@dataclass(frozen=True)
class VQConfig:
    patch_size: int = 5  # P steps per token; H must be a multiple of P
    codebook_size: int = 256  # K codewords = vocab_size
    iterations: int = 30  # Lloyd steps
    max_fit_patches: int = 100_000  # k-means runs on at most this many patches (random subset)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.patch_size < 1:
            raise ValueError(f"patch_size: expected >= 1, got {self.patch_size}")
        if self.codebook_size < 1:
            raise ValueError(f"codebook_size: expected >= 1, got {self.codebook_size}")
        if self.iterations < 0:
            raise ValueError(f"iterations: expected >= 0, got {self.iterations}")
        if self.max_fit_patches < 1:
            raise ValueError(f"max_fit_patches: expected >= 1, got {self.max_fit_patches}")


def kmeans(points: np.ndarray, k: int, iterations: int, seed: int) -> np.ndarray:
    """k-means++ seeding then Lloyd steps; returns centroids [k, F] (float32). Torch, lazily."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))  # [M, F]
    m = x.shape[0]
    first = torch.randint(m, (1,), generator=generator)
    centroids = [x[first]]
    nearest = torch.cdist(x, centroids[0]).squeeze(1) ** 2  # [M] squared distance to nearest centroid
    for _ in range(1, k):
        weights = nearest if nearest.sum() > 0 else torch.ones(m)
        pick = torch.multinomial(weights, 1, generator=generator)
        centroids.append(x[pick])
        nearest = torch.minimum(nearest, (torch.cdist(x, x[pick]).squeeze(1)) ** 2)
    c = torch.cat(centroids)  # [k, F]
    for _ in range(iterations):
        distances = torch.cdist(x, c)  # [M, k]
        assign = distances.argmin(1)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        used = counts > 0
        c[used] = sums[used] / counts[used, None]
        dead = int((~used).sum())
        if dead:  # re-seed unused codewords on the worst-served points
            worst = distances.gather(1, assign[:, None]).squeeze(1).topk(min(dead, m)).indices
            c[~used] = x[worst].repeat((dead + len(worst) - 1) // len(worst), 1)[:dead]
    return c.numpy()


@register
class VQTokenizer(ActionTokenizer):
    """Nearest-codeword tokens over temporal patches."""

    kind = "vq"

    def __init__(self, config: VQConfig, horizon: int, action_dim: int, codebook: np.ndarray) -> None:
        if horizon % config.patch_size:
            raise ValueError(f"patch_size: {config.patch_size} must divide the horizon {horizon}")
        expected = (config.codebook_size, config.patch_size * action_dim)
        if codebook.shape != expected:
            raise ValueError(f"codebook: expected shape {list(expected)}, got {list(codebook.shape)}")
        self.config = config
        self.horizon, self.action_dim = int(horizon), int(action_dim)
        self.codebook = np.asarray(codebook, dtype=np.float32)  # [K, P·D]

    @property
    def vocab_size(self) -> int:
        return self.config.codebook_size

    @property
    def tokens_per_chunk(self) -> int:
        return self.horizon // self.config.patch_size

    @classmethod
    def fit(cls, chunks: np.ndarray, **config: Any) -> VQTokenizer:
        cfg = VQConfig(**config)
        chunks = check_fit_chunks(chunks)
        _, horizon, action_dim = chunks.shape
        if horizon % cfg.patch_size:
            raise ValueError(f"patch_size: {cfg.patch_size} must divide the horizon {horizon}")
        patches = rearrange(chunks, "n (t p) d -> (n t) (p d)", p=cfg.patch_size)
        rng = np.random.default_rng(cfg.seed)
        if len(patches) > cfg.max_fit_patches:
            patches = patches[rng.choice(len(patches), cfg.max_fit_patches, replace=False)]
        if len(patches) < cfg.codebook_size:
            raise ValueError(
                f"codebook_size: {cfg.codebook_size} codewords need at least as many patches, "
                f"got {len(patches)} ({len(chunks)} chunks × {horizon // cfg.patch_size})"
            )
        codebook = kmeans(patches, cfg.codebook_size, cfg.iterations, cfg.seed)
        return cls(cfg, horizon, action_dim, codebook)

    def encode(self, chunks: np.ndarray) -> list[np.ndarray]:
        chunks = check_chunks(chunks, self.horizon, self.action_dim).astype(np.float32)
        patches = rearrange(chunks, "n (t p) d -> (n t) (p d)", p=self.config.patch_size)
        # ‖x − c‖² = ‖x‖² − 2 x·c + ‖c‖²; ‖x‖² does not change the argmin.
        scores = patches @ self.codebook.T - 0.5 * (self.codebook**2).sum(1)
        ids = scores.argmax(1).astype(np.int64).reshape(len(chunks), self.tokens_per_chunk)
        return list(ids)

    def decode(self, tokens: Sequence[Sequence[int]], strict: bool = False) -> DecodeResult:
        ids, valid = split_valid_ids(tokens, self.vocab_size, strict)
        counts = np.array([len(a) for a in ids], dtype=np.int64)
        flat = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
        packed, exact = pack_sequences(flat, counts, self.tokens_per_chunk, "patches", strict)
        patches = self.codebook[packed]  # [N, T, P·D]
        # Missing patches are zeros (the centre of the normalized range), not codeword 0.
        patches[np.arange(self.tokens_per_chunk)[None, :] >= counts[:, None]] = 0.0
        actions = rearrange(patches, "n t (p d) -> n (t p) d", p=self.config.patch_size)
        return DecodeResult(actions=np.ascontiguousarray(actions, dtype=np.float32), valid=valid & exact)

    def _state(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "codebook_file": CODEBOOK_FILE}

    def _save_files(self, directory: Path) -> None:
        write_bytes(directory / CODEBOOK_FILE, save_safetensors({"codebook": self.codebook}))

    @classmethod
    def _from_state(cls, state: dict[str, Any], directory: Path) -> VQTokenizer:
        path = directory / state["codebook_file"]
        if not path.is_file():
            raise FileNotFoundError(f"{path}: VQ codebook file missing")
        codebook = load_safetensors(path.read_bytes())["codebook"]
        return cls(VQConfig(**state["config"]), state["horizon"], state["action_dim"], codebook)
