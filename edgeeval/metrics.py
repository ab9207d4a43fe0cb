"""Pure formulas shared by the stages: repetition statistics, accuracy, capability.

No I/O, no models: every function here is checked against hand-computed tables in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

from edgeeval.records import KvCacheLayout, KvPoint, ModelRecord, SampleResult, TaskScore


def mean_stddev(samples: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n-1), as llama-bench reports them.

    >>> mean_stddev([10.0, 12.0, 14.0])
    (12.0, 2.0)
    """
    if not samples:
        raise ValueError("no samples")
    mean = sum(samples) / len(samples)
    if len(samples) < 2:
        return mean, 0.0
    var = sum((x - mean) ** 2 for x in samples) / (len(samples) - 1)
    return mean, math.sqrt(var)


def binomial_se(p: float, n: int) -> float:
    """Standard error of a proportion from n samples, sqrt(p(1-p)/(n-1)) (lm-eval's choice).

    >>> round(binomial_se(0.5, 101), 4)
    0.05
    """
    if n < 2:
        return 0.0
    return math.sqrt(p * (1 - p) / (n - 1))


def clustered_se(values: Sequence[float], clusters: Sequence[Hashable] | None = None) -> float:
    """SE of the mean of `values`; cluster-robust (CR1) when `clusters` names each value's
    cluster (an MMLU subject, a passage) and at least two clusters are named.

    With residuals e_i = v_i - mean, n values and G clusters:
    SE^2 = G / (G - 1) * sum over clusters c of (sum_{i in c} e_i)^2 / n^2
    (Liang-Zeger's cluster-robust variance, as in the clustered-SE section of "Adding Error
    Bars to Evals", E. Miller 2024, arXiv 2411.00640, with the G / (G - 1) small-sample factor
    of Stata's CR1 for a mean). With one value per cluster it is exactly the plain SE,
    sqrt(s^2 / n) with the n - 1 variance (binomial_se for 0/1 values).
    Without clusters, or with fewer than two, the plain SE (one cluster leaves no spread
    between clusters to estimate from). The clustered SE is floored at the plain one: a CR1
    below it says the items of a cluster disagree more than chance would have them, which for
    items that share a subject or a page is noise of the estimate with few, small clusters
    (measured on stored runs: pydoc-cloze's 60 items over 27 topics gave a CR1 27 % under the
    paired SE of two variants), and a smaller SE would settle comparisons on that noise.
    Example: 1 0 | 1 0 | 1 0 has cluster sums 0, 0, 0 (CR1 = 0), so its SE stays the plain
    sqrt(0.3 / 6) = 0.2236.

    Worked example, 10 values in 3 clusters of 4, 2 and 4: 1 1 1 0 | 0 0 | 1 0 0 1, mean 0.5;
    cluster sums of residuals 1.0, -1.0, 0.0, so SE^2 = 3/2 * 2 / 100 = 0.03: SE 0.1732
    (plain: s^2 = 2.5 / 9, SE = sqrt(0.2778 / 10) = 0.1667).

    >>> round(clustered_se([1, 1, 1, 0, 0, 0, 1, 0, 0, 1], list("aaaabbcccc")), 4)
    0.1732
    >>> round(clustered_se([1, 1, 1, 0, 0, 0, 1, 0, 0, 1]), 4)
    0.1667
    >>> round(clustered_se([1, 0, 1, 0, 1, 0], list("aabbcc")), 4)
    0.2236
    """
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    if clusters is not None and len(clusters) != n:
        raise ValueError(f"{len(clusters)} cluster ids for {n} values")
    sums: dict[Hashable, float] = {}
    for index, value in enumerate(values):
        key = clusters[index] if clusters is not None else index
        sums[key] = sums.get(key, 0.0) + (value - mean)
    groups = len(sums)
    if groups < 2:
        return clustered_se(values)
    crv = groups / (groups - 1) * sum(t * t for t in sums.values()) / (n * n)
    if clusters is None:
        return math.sqrt(crv)  # one value per group: exactly the plain SE
    return max(math.sqrt(crv), clustered_se(values))


def cluster_count(clusters: Sequence[str]) -> int:
    """How many clusters a task's per-item cluster ids make: 0 (unclustered) unless every item
    names one and there are at least two (see clustered_se).

    >>> cluster_count(["a", "b", "a"]), cluster_count(["a", ""]), cluster_count(["a", "a"])
    (2, 0, 0)
    """
    if not clusters or not all(clusters):
        return 0
    count = len(set(clusters))
    return count if count >= 2 else 0


#: The normal quantile of a two-sided 95 % interval.
Z95 = 1.959963984540054


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion `successes`/`n` (95 % by default).

    Unlike p ± z·SE it stays inside [0, 1] and does not collapse to a point at 0 or n
    successes, which is why Brown, Cai & DasGupta (2001) and Agresti & Coull (1998) recommend
    it for small n and proportions near 0 or 1.

    >>> [round(x, 4) for x in wilson_interval(2, 2)], [round(x, 4) for x in wilson_interval(0, 2)]
    ([0.3424, 1.0], [0.0, 0.6576])
    >>> [round(x, 4) for x in wilson_interval(50, 100)]
    [0.4038, 0.5962]
    """
    if n <= 0:
        raise ValueError(f"a proportion needs n >= 1 items, not {n}")
    p, z2 = successes / n, z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(max(p * (1 - p), 0.0) / n + z2 / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion_se(acc: float, se: float, n: int) -> float:
    """The standard error a report shows for accuracy `acc` over `n` items whose stored SE is
    `se` (the binomial SE, lm-eval's): `se` itself, except at 0 % or 100 % (or n < 2), where
    the binomial SE is 0 and would present two questions as certainty. There it is the SE
    that the 95 % Wilson interval implies, its width / (2 × 1.96).

    >>> proportion_se(0.5, 0.05, 101), round(proportion_se(1.0, 0.0, 2), 4)
    (0.05, 0.1678)
    >>> round(proportion_se(0.0, 0.0, 100), 4)
    0.0094
    """
    if n < 1 or (n >= 2 and 0.0 < acc < 1.0):
        return se
    low, high = wilson_interval(acc * n, n)
    return max(se, (high - low) / (2 * Z95))


def pick(logliks: Sequence[float], choice_chars: Sequence[int], *, normalize: bool) -> int:
    """Index of the chosen answer: highest log-likelihood, or per character when `normalize`
    (lm-evaluation-harness's acc_norm divides by the continuation's length in bytes/chars)."""
    scores = list(logliks)
    if normalize:
        scores = [ll / max(c, 1) for ll, c in zip(logliks, choice_chars, strict=True)]
    return max(range(len(scores)), key=lambda i: scores[i])


def normalized_gain(acc: float, chance: float) -> float:
    """Accuracy above chance, scaled so chance is 0 and perfect is 1, clamped at 0.

    >>> normalized_gain(0.625, 0.25)
    0.5
    """
    return max(0.0, (acc - chance) / (1.0 - chance))


def capability(scores: Sequence[tuple[float, float, float]]) -> tuple[float, float]:
    """Capability 0..100 and its standard error from (acc, acc_se, chance) per task.

    capability = 100 * mean_t max(0, (acc_t - chance_t) / (1 - chance_t)); the SE propagates
    each task's binomial SE through the same linear map (the clamp is ignored for the SE).
    Example: tasks (0.625, 0.05, 0.25) and (0.5, 0.05, 0.5) give gains 0.5 and 0.0, so
    capability = 25.0, SE = 100 * sqrt((0.05/0.75)^2 + (0.05/0.5)^2) / 2 = 6.01.
    """
    if not scores:
        raise ValueError("no task scores")
    gains = [normalized_gain(a, c) for a, _, c in scores]
    var = sum((se / (1.0 - c)) ** 2 for _, se, c in scores)
    return 100.0 * sum(gains) / len(gains), 100.0 * math.sqrt(var) / len(gains)


def score_samples(
    samples: Sequence[SampleResult],
    *,
    task: str,
    version: int,
    category: str,
    chance: float,
    elapsed_s: float = 0.0,
) -> TaskScore:
    """acc and acc_norm with binomial standard errors from stored per-item log-likelihoods;
    clustered ones (clustered_se) when every sample names its cluster and there are at least
    two, then `cluster_by` and `n_clusters` say so."""
    n = len(samples)
    if n == 0:
        raise ValueError(f"task {task}: no samples to score")
    hits = [float(pick(s.logliks, s.choice_chars, normalize=False) == s.gold) for s in samples]
    hits_norm = [float(pick(s.logliks, s.choice_chars, normalize=True) == s.gold) for s in samples]
    acc, acc_norm = sum(hits) / n, sum(hits_norm) / n
    ids = [s.cluster for s in samples]
    groups = cluster_count(ids)
    return TaskScore(
        task=task,
        version=version,
        category=category,
        chance=chance,
        n=n,
        acc=acc,
        acc_se=clustered_se(hits, ids) if groups else binomial_se(acc, n),
        acc_norm=acc_norm,
        acc_norm_se=clustered_se(hits_norm, ids) if groups else binomial_se(acc_norm, n),
        elapsed_s=elapsed_s,
        cluster_by=samples[0].cluster_by if groups else "",
        n_clusters=groups,
    )


def tg_ceiling(bandwidth_bytes_per_s: float, weights_bytes: int, kv_bytes: int = 0) -> float:
    """Upper bound on generation tokens/s when each token reads all weights and the KV cache.

    >>> tg_ceiling(50e9, 500_000_000)
    100.0
    """
    return bandwidth_bytes_per_s / (weights_bytes + kv_bytes)


# --- predictions before a download (edgeeval plan; the report's "predicted vs measured") ----
#: The share of the memory-bandwidth ceiling generation reaches when this machine has no
#: measured runs yet: llmfit's factor (0.55 x the hardware's bandwidth), stated as a default.
DEFAULT_TG_EFFICIENCY = 0.55


def predicted_tg(
    bandwidth_bytes_per_s: float, efficiency: float, weights_bytes: int, kv_bytes: int = 0
) -> float:
    """Generation tokens/s expected: the roofline times the share of it measured here.

    >>> predicted_tg(50e9, 0.5, 500_000_000)
    50.0
    """
    return efficiency * tg_ceiling(bandwidth_bytes_per_s, weights_bytes, kv_bytes)


def fit_power_law(points: Sequence[tuple[float, float]]) -> tuple[float, float] | None:
    """(c, b) of y = c * x**b, least squares on the logarithms; None when the points cannot
    give one (fewer than two, x within 20 % of each other, or any value not above 0).

    >>> c, b = fit_power_law([(1e8, 1.0), (4e8, 2.0), (9e8, 3.0)])
    >>> round(c * 1e4, 6), round(b, 6)
    (1.0, 0.5)
    """
    if len(points) < 2 or any(x <= 0 or y <= 0 for x, y in points):
        return None
    xs, ys = [math.log(x) for x, _ in points], [math.log(y) for _, y in points]
    if max(xs) - min(xs) < math.log(1.2):
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    return math.exp(my - slope * mx), slope


def predicted_pp(flops_per_s: float, n_params: int) -> float:
    """Prompt tokens/s expected from an effective compute rate (about 2 FLOPs per parameter and
    token, the rate measured as pp t/s x 2 x parameters on earlier runs).

    >>> predicted_pp(2e11, 500_000_000)
    200.0
    """
    return flops_per_s / (2 * n_params)


def prediction_error(predicted: float, measured: float) -> float:
    """How far a prediction was off, as a share of the measured value (+ = too optimistic).

    >>> round(prediction_error(110.0, 100.0), 3)
    0.1
    """
    return (predicted - measured) / measured


def bits_per_weight(record: ModelRecord) -> float | None:
    """File bits per parameter (the GGUF's size in bits / the model's parameter count)."""
    params = record.n_params or record.variant.params
    return record.variant.size_bytes * 8 / params if params else None


# --- KV cache per context length, as llama.cpp allocates it ---------------------------------
#: llama.cpp rounds the context (and the sliding-window cache) up to a multiple of this.
KV_PAD = 256
#: Context lengths the memory-vs-context table shows (capped by the trained context).
KV_CONTEXTS = (512, 2048, 8192, 32768)


def pad_up(n: int, multiple: int = KV_PAD) -> int:
    """`n` rounded up to a multiple of `multiple`.

    >>> pad_up(1000), pad_up(1024), pad_up(1)
    (1024, 1024, 256)
    """
    return -(-n // multiple) * multiple


def kv_cells(n_ctx: int, *, n_swa: int, n_ubatch: int, swa_full: bool) -> tuple[int, int]:
    """(cells of the full-attention cache, cells of the sliding-window cache) that llama.cpp
    allocates for one sequence of `n_ctx` tokens: the context padded to 256; the SWA cache
    holds the window plus one micro-batch, padded to 256 and capped by the padded context
    before padding, unless `swa_full` gives it the full size.

    >>> kv_cells(1000, n_swa=512, n_ubatch=512, swa_full=False)
    (1024, 1024)
    >>> kv_cells(8192, n_swa=512, n_ubatch=512, swa_full=False)
    (8192, 1024)
    >>> kv_cells(8192, n_swa=512, n_ubatch=512, swa_full=True)
    (8192, 8192)
    """
    full = pad_up(max(n_ctx, 1))
    if swa_full or n_swa <= 0:
        return full, full
    return full, pad_up(min(full, n_swa + n_ubatch))


def kv_cache_at(layout: KvCacheLayout, n_ctx: int, *, windowed: bool = False) -> int:
    """KV cache bytes of `layout` at `n_ctx`: as the run allocates it, or with the SWA layers
    holding only their window (`windowed`, llama.cpp's swa_full off)."""
    full, swa = kv_cells(
        n_ctx,
        n_swa=layout.n_swa,
        n_ubatch=layout.n_ubatch,
        swa_full=layout.swa_full and not windowed,
    )
    return layout.full_bytes_per_cell * full + layout.swa_bytes_per_cell * swa


def kv_contexts(n_ctx_train: int | None, run_n_ctx: int) -> tuple[int, ...]:
    """The table's context lengths: the standard ones up to the trained context (all of them
    when it is unknown), and the run's own n_ctx.

    >>> kv_contexts(8192, 4096)
    (512, 2048, 4096, 8192)
    """
    cap = n_ctx_train or max(KV_CONTEXTS)
    return tuple(sorted({n for n in KV_CONTEXTS if n <= cap} | {run_n_ctx}))


def kv_points(layout: KvCacheLayout, contexts: Sequence[int]) -> tuple[KvPoint, ...]:
    """The layout's bytes at each of `contexts`, as run and windowed."""
    return tuple(
        KvPoint(n, kv_cache_at(layout, n), kv_cache_at(layout, n, windowed=True)) for n in contexts
    )


def peak_at_ctx(record: ModelRecord, n_ctx: int) -> int | None:
    """Estimated peak memory at `n_ctx`: the measured peak, less the KV cache at the run's
    n_ctx, plus the KV cache at `n_ctx` (None without a peak or a KV layout)."""
    layout = record.kv_cache
    if record.memory is None or layout is None or not record.memory.model_peak_bytes:
        return None
    run_ctx = record.settings.n_ctx or record.n_ctx_train  # n_ctx 0: the trained context
    if not run_ctx:
        return None
    run_kv = kv_cache_at(layout, run_ctx)
    return max(0, record.memory.model_peak_bytes - run_kv + kv_cache_at(layout, n_ctx))
