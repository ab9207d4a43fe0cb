"""The fidelity maths, pure functions on numpy arrays (llama-perplexity's statistics).

Per scored token: KLD(ref || variant), -ln p of the actual token under both, p difference of
the actual token, and whether the most likely tokens agree (`token_stats`). Then mean KLD with
its standard error, KLD percentiles, PPL of both, mean ln(PPL(Q)/PPL(ref)), Same-top-p and RMS
of delta-p, each with its standard error (`summarize`). How the corpus is cut into chunks and
which positions of a chunk are scored is here too (`make_chunks`, `scored`); running the models
and storing results is edgeeval.fidelity.orchestrate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Reference log-probabilities at or below this are left out of the KLD sum (as llama-perplexity).
LOGP_FLOOR = -16.0


@dataclass(frozen=True)
class TokenStats:
    """Per scored token: -ln p of the actual next token under the variant (`nll`) and the
    reference (`nll_ref`), KLD(ref || variant) in nats, p_variant - p_ref of the actual token,
    and whether both models rank the same token first."""

    nll: np.ndarray
    nll_ref: np.ndarray
    kld: np.ndarray
    p_diff: np.ndarray
    same_top: np.ndarray

    @staticmethod
    def concat(parts: list[TokenStats]) -> TokenStats:
        return TokenStats(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("nll", "nll_ref", "kld", "p_diff", "same_top")
            )
        )


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise natural-log probabilities (float32) of a (rows, vocab) array of logits.

    Example: logits (0, ln 3) -> probabilities (0.25, 0.75) -> (-1.3863, -0.2877).
    """
    shifted = logits - logits.max(axis=1, keepdims=True)
    total = np.exp(shifted).sum(axis=1, keepdims=True, dtype=np.float64)
    shifted -= np.log(total).astype(np.float32)
    return shifted


def token_stats(
    logp_ref: np.ndarray, logp_q: np.ndarray, targets: np.ndarray, *, floor: float = LOGP_FLOOR
) -> TokenStats:
    """Compare two models' log-probabilities (rows = positions) on the tokens that followed.

    KLD(ref || q) = sum over v of p_ref(v) * (ln p_ref(v) - ln p_q(v)), skipping the v whose
    ln p_ref(v) <= `floor` (they add less than e^-16 each; llama-perplexity skips them too).
    Worked example: p_ref = (0.5, 0.5), p_q = (0.25, 0.75) gives
    0.5 * ln(0.5 / 0.25) + 0.5 * ln(0.5 / 0.75) = 0.3466 - 0.2027 = 0.1438 nats;
    identical distributions give exactly 0.

    The variant's values are compared on the reference's grid: with a float16 reference (as
    stored on disk) they are rounded to float16 first, so a model compared with itself gives
    exactly 0. Only the reference's entries above the floor (a few percent of a real
    vocabulary) are converted and exponentiated, which keeps a 152k-token vocabulary cheap.
    """
    n = len(targets)
    rows = np.arange(n)
    grid = logp_ref.dtype
    kept = np.flatnonzero(_above(logp_ref, floor))
    kept_rows, kept_cols = np.divmod(kept, logp_ref.shape[1])
    lr = logp_ref.ravel()[kept].astype(np.float64)
    lq = logp_q.ravel()[kept].astype(grid).astype(np.float64)
    ref_at = logp_ref[rows, targets].astype(np.float64)
    q_at = logp_q[rows, targets].astype(grid).astype(np.float64)
    return TokenStats(
        nll=-q_at,
        nll_ref=-ref_at,
        kld=np.bincount(kept_rows, weights=np.exp(lr) * (lr - lq), minlength=n),
        p_diff=np.exp(q_at) - np.exp(ref_at),
        same_top=_top_of_kept(kept_rows, kept_cols, lr, logp_ref) == _top_on_grid(logp_q, grid),
    )


def _above(logp: np.ndarray, floor: float) -> np.ndarray:
    """logp > floor, elementwise. numpy compares float16 arrays through a slow per-element
    conversion. Log-probabilities are never NaN, and for a negative `floor` that float16 holds
    exactly, the values above it are those whose bit pattern, read as uint16, is below the
    floor's: a negative value's pattern grows from 0x8000 with its magnitude, and every
    non-negative one is below 0x7C01."""
    if logp.dtype != np.float16:
        return logp > floor
    if floor < 0 and float(np.float16(floor)) == floor:
        return logp.view(np.uint16) < np.float16(floor).view(np.uint16)
    return logp.astype(np.float32) > floor  # a floor between float16 values


def _top_of_kept(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, logp: np.ndarray
) -> np.ndarray:
    """Per row of `logp`, the first column holding its largest value, found among the entries
    above the floor (rows, cols, values, in row-major order). A row's most likely token is
    always among them (its log-probability is at least -ln(vocabulary size)); if a floor was set
    so high that a row has none, the whole array is searched instead."""
    n = len(logp)
    if np.any(np.bincount(rows, minlength=n) == 0):
        return logp.argmax(axis=1)
    top = np.maximum.reduceat(values, np.searchsorted(rows, np.arange(n)))
    hits = np.flatnonzero(values == top[rows])
    return cols[hits[np.searchsorted(rows[hits], np.arange(n))]]


def _top_on_grid(logp: np.ndarray, grid: np.dtype) -> np.ndarray:
    """Per row, the first column holding the largest value once rounded to `grid`. Rounding
    can only tie the maximum with values close to it (float16 steps are at most 1/64 this
    near the top), so only rows with another value within 1/16 of the maximum look again."""
    top = logp.argmax(axis=1)
    rows = np.arange(len(logp))
    near = logp >= (logp[rows, top] - 0.0625)[:, None]
    for row in np.flatnonzero(near.sum(axis=1) > 1):
        cols = np.flatnonzero(near[row])
        top[row] = cols[np.argmax(logp[row, cols].astype(grid))]
    return top


def mean_se(values: np.ndarray) -> tuple[float, float]:
    """Mean and its standard error std(ddof=1) / sqrt(n); the error is 0 below 2 values.

    Example: (1, 2, 3, 4) -> mean 2.5, std 1.291, SE 1.291 / 2 = 0.6455.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float(values.mean()) if len(values) else math.nan, 0.0
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def summarize(stats: TokenStats) -> dict[str, float | int]:
    """The FidelityResult metrics of a set of scored tokens (llama-perplexity's statistics).

    PPL = exp(mean nll) with SE PPL * SE(mean nll); ln(PPL(Q)/PPL(ref)) = mean(nll - nll_ref)
    with the SE of the paired differences; percentiles interpolate linearly between sorted
    values; Same-top-p SE = sqrt(f (1 - f) / (n - 1)); RMS delta-p = sqrt(mean(dp^2)) with SE
    SE(mean dp^2) / (2 RMS). Example: ref nll (1.0, 2.0), variant nll (1.5, 2.5) give
    ln ratio 0.5 and PPL ratio e^0.5 = 1.65.
    """
    n = len(stats.kld)
    ln_q, ln_q_se = mean_se(stats.nll)
    ln_r, ln_r_se = mean_se(stats.nll_ref)
    ratio, ratio_se = mean_se(stats.nll - stats.nll_ref)
    kld, kld_se = mean_se(stats.kld)
    same = float(np.mean(stats.same_top))
    same_se = math.sqrt(same * (1 - same) / (n - 1)) if n > 1 else 0.0
    msd, msd_se = mean_se(stats.p_diff**2)
    rms = math.sqrt(msd)
    return {
        "n_tokens": n,
        "ppl": math.exp(ln_q),
        "ppl_se": math.exp(ln_q) * ln_q_se,
        "ppl_ref": math.exp(ln_r),
        "ppl_ref_se": math.exp(ln_r) * ln_r_se,
        "ln_ppl_ratio": ratio,
        "ln_ppl_ratio_se": ratio_se,
        "kld_mean": kld,
        "kld_se": kld_se,
        "kld_max": float(np.max(stats.kld)),
        "kld_p999": _pct(stats.kld, 99.9),
        "kld_p99": _pct(stats.kld, 99.0),
        "kld_p90": _pct(stats.kld, 90.0),
        "kld_median": float(np.median(stats.kld)),
        "same_top_pct": 100 * same,
        "same_top_se_pct": 100 * same_se,
        "rms_dp_pct": 100 * rms,
        "rms_dp_se_pct": 100 * msd_se / (2 * rms) if rms else 0.0,
    }


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q))


def make_chunks(tokens: list[int] | np.ndarray, n_ctx: int, max_chunks: int) -> np.ndarray:
    """(n_chunks, n_ctx) int32: consecutive n_ctx-token windows, at most `max_chunks` (0 = all).

    Example: 1100 tokens, n_ctx 512 -> 2 chunks (the last 76 tokens are not used).
    """
    n = len(tokens) // n_ctx
    if max_chunks > 0:
        n = min(n, max_chunks)
    return np.asarray(tokens[: n * n_ctx], dtype=np.int32).reshape(n, n_ctx)


def scored(n_ctx: int) -> tuple[int, int]:
    """(first, count): logits from position `first` on are scored, `count` tokens per chunk.

    For n_ctx 512: positions 256..510 predict tokens 257..511, so 255 tokens.
    """
    return n_ctx // 2, n_ctx - 1 - n_ctx // 2
