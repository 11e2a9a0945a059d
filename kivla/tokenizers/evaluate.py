"""Rate-distortion and speed of fitted tokenizers on held-out chunks (the CLI report, the benchmark)."""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from kivla.tokenizers.base import ActionTokenizer, CoefficientClipWarning, fit_tokenizer


@dataclass(frozen=True)
class TokenizerReport:
    kind: str
    vocab_size: int
    tokens_mean: float  # tokens a chunk
    tokens_median: float
    tokens_p95: float
    rmse: float  # reconstruction error in normalized units
    max_abs: float
    encode_chunks_per_s: float
    decode_chunks_per_s: float
    valid_fraction: float  # decode(encode(x)) flagged valid
    clipped_fraction: float  # share of values/coefficients clipped at encode
    fit_seconds: float = float("nan")

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(
    tokenizer: ActionTokenizer, chunks: np.ndarray, fit_seconds: float = float("nan")
) -> TokenizerReport:
    """Encode and decode `chunks` [N, H, D] once, timing both; errors are over all values."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CoefficientClipWarning)
        start = time.perf_counter()
        ids = tokenizer.encode(chunks)
        encoded = time.perf_counter()
    clipped = [w.message for w in caught if isinstance(w.message, CoefficientClipWarning)]
    for w in caught:  # anything else still reaches the user
        if not isinstance(w.message, CoefficientClipWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    decode_start = time.perf_counter()
    out = tokenizer.decode(ids)
    decoded = time.perf_counter()
    lengths = np.array([len(seq) for seq in ids])
    error = out.actions.astype(np.float64) - chunks
    n = len(chunks)
    return TokenizerReport(
        kind=tokenizer.kind,
        vocab_size=tokenizer.vocab_size,
        tokens_mean=float(lengths.mean()),
        tokens_median=float(np.median(lengths)),
        tokens_p95=float(np.percentile(lengths, 95)),
        rmse=float(np.sqrt((error**2).mean())),
        max_abs=float(np.abs(error).max()),
        encode_chunks_per_s=n / max(encoded - start, 1e-9),
        decode_chunks_per_s=n / max(decoded - decode_start, 1e-9),
        valid_fraction=float(out.valid.mean()),
        clipped_fraction=sum(c.count for c in clipped) / max(sum(c.total for c in clipped), 1),
        fit_seconds=fit_seconds,
    )


def fit_and_evaluate(
    kinds: list[str], chunks: np.ndarray, holdout: float = 0.2, configs: dict | None = None, seed: int = 0
) -> list[TokenizerReport]:
    """Fit every kind on a random (1 − holdout) share of `chunks`, evaluate on the rest."""
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout: expected a fraction in (0, 1), got {holdout}")
    order = np.random.default_rng(seed).permutation(len(chunks))
    cut = round(len(chunks) * (1 - holdout))
    if cut < 1 or cut >= len(chunks):
        raise ValueError(f"chunks: {len(chunks)} chunks are too few to hold out {holdout:.0%} for evaluation")
    train, test = chunks[order[:cut]], chunks[order[cut:]]
    reports = []
    for kind in kinds:
        start = time.perf_counter()
        tokenizer = fit_tokenizer(kind, train, **(configs or {}).get(kind, {}))
        reports.append(evaluate(tokenizer, test, fit_seconds=time.perf_counter() - start))
    return reports


def markdown_table(reports: list[TokenizerReport]) -> str:
    """One row per kind: tokens a chunk (mean / median / p95), errors, speeds."""
    lines = [
        "| kind | vocab | tokens mean | median | p95 | RMSE | max abs | clipped | encode chunks/s "
        "| decode chunks/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in reports:
        tokens = f"{r.tokens_mean:.1f} | {r.tokens_median:.0f} | {r.tokens_p95:.0f}"
        speed = f"{r.encode_chunks_per_s:,.0f} | {r.decode_chunks_per_s:,.0f}"
        errors = f"{r.rmse:.4f} | {r.max_abs:.4f} | {r.clipped_fraction:.2%}"
        lines.append(f"| {r.kind} | {r.vocab_size} | {tokens} | {errors} | {speed} |")
    return "\n".join(lines)
