"""The fidelity maths, pure functions on numpy arrays (llama-perplexity's definitions).

The reference's next-token distributions are stored as llama-perplexity stores them
(`reference_rows`), and a variant's logits are compared with them as llama-perplexity compares
them (`token_stats`): per scored token, KLD(ref || variant), -ln p of the actual token under
both, p difference of the actual token, and whether the most likely tokens agree. Then mean KLD
with its standard error, KLD percentiles, PPL of both, mean ln(PPL(Q)/PPL(ref)), Same-top-p and
RMS of delta-p, each with its standard error (`summarize`). How the corpus is cut into chunks
and which positions of a chunk are scored is here too (`make_chunks`, `scored`); running the
models and storing results is edgeeval.fidelity.orchestrate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Reference log-probabilities at or below this are left out of the KLD sum (as llama-perplexity).
LOGP_FLOOR = -16.0
_SPAN = np.float32(16.0)  # the stored grid covers the top 16 nats of a row's logits
_LEVELS = np.float32(65535.0)  # uint16 levels over that span
_NO_LEVEL = 65536  # "no level of this row is above the floor"


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


def ref_dtype(n_vocab: int) -> np.dtype:
    """One stored reference row, llama-perplexity's layout (`--kl-divergence-base` files):
    float32 `scale`, float32 `min_logp`, then one uint16 `level` per token, padded to an even
    count. Token v's log-probability is scale * level[v] + min_logp, in float32."""
    padded = 2 * ((n_vocab + 1) // 2)
    return np.dtype([("scale", "<f4"), ("min_logp", "<f4"), ("level", "<u2", (padded,))])


def reference_rows(logits: np.ndarray) -> np.ndarray:
    """The reference's log-probabilities of (rows, vocab) float32 logits, stored as
    llama-perplexity stores them: a structured array of `ref_dtype` rows.

    Per row, with m the largest logit and lse = ln sum exp(logit - m): the levels span the top
    16 nats, low = max(min logit, m - 16), scale = (m - low) / 65535, min_logp = low - m - lse;
    level = round-half-even((logit - low) / scale), 0 at or below low. All in float32 as
    llama-perplexity computes it. Example: logits (0, -1, -20) give m = 0, low = -16,
    scale = 16/65535, levels (65535, 61439, 0); decoded, (-0.3133, -1.3133, -16.3133).
    """
    n_vocab = logits.shape[1]
    top = logits.max(axis=1)
    low = np.maximum(logits.min(axis=1), top - _SPAN)
    lse = _log_sum_exp(logits, top)
    out = np.zeros(len(logits), ref_dtype(n_vocab))
    scale = (top - low) / _LEVELS
    out["scale"] = scale
    out["min_logp"] = low - top - lse
    inverse = np.zeros_like(scale)  # a row of equal logits has scale 0 and every level 0
    np.divide(np.float32(1), scale, out=inverse, where=scale != 0)
    levels = logits - low[:, None]
    levels *= inverse[:, None]
    np.rint(levels, out=levels)  # half to even, as llama-perplexity's nearest_int
    np.maximum(levels, 0, out=levels)  # at or below `low`: level 0
    out["level"][:, :n_vocab] = levels
    return out


def decode(ref: np.ndarray) -> np.ndarray:
    """(rows, vocab) float32 log-probabilities of stored reference rows (padding included)."""
    return ref["scale"][:, None] * ref["level"] + ref["min_logp"][:, None]


def _log_sum_exp(logits: np.ndarray, top: np.ndarray) -> np.ndarray:
    """float32 ln(sum exp(logit - top)) per row; the sum runs in float64 (llama-perplexity)."""
    shifted = logits - top[:, None]
    np.exp(shifted, out=shifted)
    return np.log(shifted.sum(axis=1, dtype=np.float64)).astype(np.float32)


def token_stats(
    ref: np.ndarray, logits: np.ndarray, targets: np.ndarray, *, floor: float = LOGP_FLOOR
) -> TokenStats:
    """Compare a variant's float32 logits (rows = positions) with the reference's stored rows
    (`reference_rows`) on the tokens that followed, by llama-perplexity's definitions:

    - the variant's log-probabilities are logit - (m + lse) from its own float32 logits,
      never rounded to the reference's grid; its top token is the first largest logit;
    - the reference's are the decoded levels; its top token is the first largest decoded value;
    - KLD(ref || q) = sum over v of p_ref(v) * (ln p_ref(v) - ln p_q(v)), over the v whose
      decoded ln p_ref(v) is above `floor` (float32 comparison, as llama-perplexity).

    Worked example: p_ref = (0.5, 0.5), p_q = (0.25, 0.75) give
    0.5 * ln(0.5 / 0.25) + 0.5 * ln(0.5 / 0.75) = 0.3466 - 0.2027 = 0.1438 nats. A model
    compared with itself gives a KLD within about 1e-4 of 0 (the reference's 16-bit grid), as
    llama-perplexity does. Only the reference's entries above the floor (a few percent of a
    real vocabulary) are decoded and exponentiated, which keeps a 152k-token vocabulary cheap.
    """
    n, n_vocab = logits.shape
    rows = np.arange(n)
    scale, low = ref["scale"], ref["min_logp"]
    levels = ref["level"][:, :n_vocab]
    top = logits.argmax(axis=1)  # the first largest logit
    norm = logits[rows, top] + _log_sum_exp(logits, logits[rows, top])  # m + lse, float32
    nll = norm - logits[rows, targets]
    nll_ref = -(scale * levels[rows, targets] + low)
    kept = np.flatnonzero(_kept(levels, _first_level_above(scale, low, floor)))
    kept_rows, kept_cols = np.divmod(kept, n_vocab)  # row-major order
    lr = scale[kept_rows] * levels[kept_rows, kept_cols] + low[kept_rows]
    terms = np.exp(lr) * (lr - logits[kept_rows, kept_cols] + norm[kept_rows])
    return TokenStats(
        nll=nll,
        nll_ref=nll_ref,
        kld=np.bincount(kept_rows, weights=terms, minlength=n),
        p_diff=np.exp(-nll) - np.exp(-nll_ref),
        same_top=_reference_top(kept_rows, kept_cols, lr, ref, n_vocab) == top,
    )


def _first_level_above(scale: np.ndarray, low: np.ndarray, floor: float) -> np.ndarray:
    """Per row, the smallest level whose decoded value scale * level + min_logp is above
    `floor` (in float32), or 65536 when none is. Decoding never decreases as the level grows
    (float32 multiplication by scale >= 0 and addition are monotone), so a binary search over
    0..65536 finds it exactly in 17 steps on whole columns of rows."""
    lo = np.zeros(len(scale), np.int64)
    hi = np.full(len(scale), _NO_LEVEL, np.int64)
    limit = np.float32(floor)
    while np.any(open_ := lo < hi):
        mid = (lo + hi) // 2
        above = scale * mid.astype(np.float32) + low > limit
        hi = np.where(open_ & above, mid, hi)
        lo = np.where(open_ & ~above, mid + 1, lo)
    return lo


def _kept(levels: np.ndarray, first: np.ndarray) -> np.ndarray:
    """The entries at or above each row's first kept level (a uint16 comparison)."""
    kept = levels >= np.minimum(first, 65535).astype(np.uint16)[:, None]
    kept[first == _NO_LEVEL] = False
    return kept


def _reference_top(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, ref: np.ndarray, n_vocab: int
) -> np.ndarray:
    """Per row, the first column holding the row's largest decoded value, found among the
    entries above the floor (rows, cols, values, in row-major order): the largest value is one
    of them whenever any is. A row with none is decoded whole."""
    n = len(ref)
    counts = np.bincount(rows, minlength=n)
    has = np.flatnonzero(counts)
    best = np.full(n, -1, np.int64)
    if len(has):
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))[has]
        row_max = np.zeros(n, values.dtype)
        row_max[has] = np.maximum.reduceat(values, starts)
        hits = np.flatnonzero(values == row_max[rows])  # row-major: a row's first hit first
        best[has] = cols[hits[np.searchsorted(rows[hits], has)]]
    for row in np.flatnonzero(counts == 0):
        best[row] = decode(ref[row : row + 1])[0, :n_vocab].argmax()
    return best


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
    ratio, ratio_se = mean_se(np.subtract(stats.nll, stats.nll_ref, dtype=np.float64))
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
