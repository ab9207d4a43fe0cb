"""Records that cross stage boundaries: small frozen dataclasses that round-trip through JSON.

Units live in field names (`size_bytes`, `load_s`, `avg_ts` = tokens per second). A measured
model is a `ModelRecord`; it carries its provenance (host, settings, file sha256) so any later
stage (scoring, ranking, reports) runs from the stored record alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

from edgeeval.errors import ConfigError
from edgeeval.settings import THINK_LEAD_IN

T = TypeVar("T")

STATUS_OK = "ok"
STATUS_ERROR = "error"  # the child raised or exited non-zero
STATUS_CRASH = "crash"  # the child died from a signal (segfault, OOM kill)
STATUS_TIMEOUT = "timeout"  # a limit fired (no progress for --stall-timeout s, or --timeout)
STATUS_SKIPPED = "skipped"  # refused before loading (pre-flight, fetch failure)
STATUS_PARTIAL = "partial"  # a TaskScore over the items scored before the model was stopped


@dataclass(frozen=True)
class HostInfo:
    """What the numbers depend on, besides the model and the settings."""

    host_id: str
    hostname: str
    os: str
    os_version: str
    machine: str
    cpu_model: str
    cores_physical: int
    cores_logical: int
    ram_bytes: int
    python_version: str
    edgeeval_version: str
    llama_cpp_python_version: str
    llama_cpp_system_info: str
    backend: str
    gpu_offload: bool
    power_source: str = "unknown"  # "ac", "battery" or "unknown" (laptops)
    mem_bandwidth_bytes_per_s: float | None = None  # measured once per host, cached
    gpu_devices: str = ""  # ggml's GPU devices, "CUDA0: NVIDIA H200 (141.0 GB)"; "" = none
    # What llama-bench writes for the build and the machine ("" in records made before these
    # fields; the speed exports then fall back, see store/llamabench.py):
    build_commit: str = ""  # ggml_commit() of the bundled llama.cpp, "0c1e570-dirty"
    cpu_info: str = ""  # ggml's CPU (and accelerator) device descriptions, ", "-joined
    gpu_info: str = ""  # ggml's GPU device descriptions, ", "-joined; "" = none
    backends: str = ""  # ggml's backend registries but CPU, ","-joined; "CPU" when none


@dataclass(frozen=True)
class RunSettings:
    """Everything in a run that changes a number. `key()` identifies it for --resume."""

    n_ctx: int = 2048
    n_threads: int = 0  # 0 = physical cores
    n_batch: int = 512
    n_ubatch: int = 512
    n_gpu_layers: int = 0
    flash_attn: bool | str = False  # True (on), False (off) or "auto" (llama.cpp decides)
    use_mmap: bool = True
    use_mlock: bool = False
    # The KV cache (llama-bench's -ctk/-ctv, ggml type names) and the sliding-window layers'
    # cache: full-size (swa_full, llama-cpp-python's default) or windowed (llama-server's).
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    swa_full: bool = True
    runtime: str = ""  # the --as runtime profile whose defaults these are ("" = edgeeval's)
    pp_tokens: int = 128
    tg_tokens: int = 32
    repetitions: int = 5
    # Speed sweeps (cartesian product, llama-bench style). Empty = the single value above.
    sweep_threads: tuple[int, ...] = ()
    sweep_n_gpu_layers: tuple[int, ...] = ()
    sweep_n_batch: tuple[int, ...] = ()
    sweep_flash_attn: tuple[bool | str, ...] = ()
    sweep_cache_type_k: tuple[str, ...] = ()
    sweep_cache_type_v: tuple[str, ...] = ()
    # K and V swept together (--cache-type f16,q8_0: the points K=V=f16 and K=V=q8_0, as
    # OLLAMA_KV_CACHE_TYPE sets both), in place of the K x V product of the two lists above
    sweep_cache_type_kv: tuple[str, ...] = ()
    sweep_n_ctx: tuple[int, ...] = ()
    sweep_swa_full: tuple[bool, ...] = ()  # --swa-cache full,windowed
    # The context knobs (n_ctx, flash attention, KV types, windowing) are measured one knob point
    # at a time, each its own record and ranking row (run.speed.knob_points); the other sweep
    # lists are speed-only points inside one record.
    depths: tuple[int, ...] = (0,)
    pp_tg: bool = False  # also run the combined "pp N + tg M" test
    ttft: bool = True  # time to first token on a text prompt of pp_tokens tokens
    suite: str = "offline"
    task_limit: int | None = None
    seed: int = 0
    # Limits (per invocation, not in key()): the model's worker is stopped after
    # stall_timeout_s seconds without progress, or timeout_s seconds in all (None: no limit).
    timeout_s: float | None = None
    stall_timeout_s: float = 300.0
    allow_code_exec: bool = False  # run generated code (code tasks); off = those are skipped
    unsafe_code_exec: bool = False  # ... without an OS sandbox (the in-process guard only)
    # Protocols (edgeeval.score.protocol) and lm-eval style task selection:
    protocol: str = "auto"  # "auto" (by the variant's kind), "instruct" or "completion"
    max_think_tokens: int | None = None  # thinking budget of reasoning models (None: per task)
    # "force": close the thinking at its budget and let the model answer (score.protocol);
    # "cut": the thinking budget is added to the answer budget (records before this field)
    think_budget_mode: str = "force"
    # what follows the forced end-of-thinking marker (--think-lead-in)
    think_lead_in: str = THINK_LEAD_IN
    tasks: tuple[str, ...] = ()  # task names (--tasks a,b); empty = the suite's
    num_fewshot: int | None = None  # few-shot examples per prompt (None: each task's own)
    task_sample: int | None = None  # a seeded sample of N items (--sample); task_limit = first N
    # measured without the host's bench lock (--allow-concurrent): another bench may have
    # shared the machine. In key() only when set: such a record is not a clean measurement.
    allow_concurrent: bool = False
    # Sequences per decode in the accuracy phase (engine/batch.py); 0 = the measured default
    # for the backend. Speed tests always run one sequence, as llama-bench.
    eval_batch: int = 0
    # --race (edgeeval.race): the race's confidence; None = every variant answers every item
    race_confidence: float | None = None
    # --race-margin: capability points a variant with more memory may lead by and still be
    # dropped as practically dominated (race.rules); 0 = only a proven lead stops a variant
    race_margin: float = 0.0
    # --race-by: the race's ranking question, capability per GB (default) or capability
    race_by: str = "capability_per_gb"

    def __post_init__(self) -> None:
        """Refuse nonsense once, where settings are built; store n_ubatch as llama.cpp uses it
        (never above n_batch), so two spellings of one configuration share one key."""
        for name, value, least in (
            ("n_ctx", self.n_ctx, 1),
            ("n_batch", self.n_batch, 1),
            ("n_ubatch", self.n_ubatch, 1),
            ("n_threads", self.n_threads, 0),
            ("n_gpu_layers", self.n_gpu_layers, -1),
            ("pp_tokens", self.pp_tokens, 1),
            ("tg_tokens", self.tg_tokens, 1),
            ("repetitions", self.repetitions, 1),
            ("task_limit", 1 if self.task_limit is None else self.task_limit, 1),
            ("task_sample", 1 if self.task_sample is None else self.task_sample, 1),
            ("max_think_tokens", 1 if self.max_think_tokens is None else self.max_think_tokens, 1),
            ("num_fewshot", 0 if self.num_fewshot is None else self.num_fewshot, 0),
            ("eval_batch", self.eval_batch, 0),
            *(("sweep_threads", v, 0) for v in self.sweep_threads),
            *(("sweep_n_gpu_layers", v, -1) for v in self.sweep_n_gpu_layers),
            *(("sweep_n_batch", v, 1) for v in self.sweep_n_batch),
            *(("sweep_n_ctx", v, 1) for v in self.sweep_n_ctx),
            *(("depths", v, 0) for v in self.depths),
        ):
            if value < least:
                _refuse(name, f"must be at least {least}, got {value}")
        limits = (("timeout_s", self.timeout_s), ("stall_timeout_s", self.stall_timeout_s))
        for name, limit in limits:
            if limit is not None and not limit > 0:
                _refuse(name, f"must be more than 0 seconds, got {limit}")
        if self.think_budget_mode not in ("force", "cut"):
            _refuse(
                "think_budget_mode",
                f"--think-budget-mode {self.think_budget_mode!r}: allowed: force, cut",
            )
        if self.race_confidence is not None and not 0.5 <= self.race_confidence < 1:
            _refuse(
                "race_confidence",
                f"--confidence {self.race_confidence}: must be at least 0.5 and below 1 "
                "(e.g. 0.95 for 95 %)",
            )
        _check_context_knobs(self)
        longest = max(self.depths, default=0) + (
            self.pp_tokens + self.tg_tokens if self.pp_tg else max(self.pp_tokens, self.tg_tokens)
        )
        smallest = min((self.n_ctx, *self.sweep_n_ctx))
        if longest > smallest:
            _refuse(
                "n_ctx",
                f"{smallest} tokens cannot hold the longest speed test (depth + tokens = "
                f"{longest}); raise --n-ctx or lower --depth/--pp/--tg",
            )
        object.__setattr__(self, "n_ubatch", clamp_ubatch(self.n_ubatch, self.n_batch))

    def shown(self) -> dict[str, Any]:
        """The settings as reports print them: flags added after the first release are left
        out while off, so a stored run renders the same report it always did."""
        data = dataclasses.asdict(self)
        for name, default in _KEY_DEFAULTS.items():
            if name != "allow_code_exec" and data[name] == default:  # shown since the start
                data.pop(name)
        return data

    def key(self) -> str:
        """Short stable hash of the settings that affect measurements (not the limits)."""
        data = dataclasses.asdict(self)
        data.pop("timeout_s")
        for name, default in _KEY_DEFAULTS.items():
            if data[name] == default:  # absent from older runs: their keys stay valid
                data.pop(name)
        data.pop("stall_timeout_s", None)
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _refuse(name: str, message: str) -> None:
    raise ConfigError(message, path="run settings", key=name)


#: KV cache types llama.cpp accepts for -ctk/-ctv (common/arg.cpp kv_cache_types, the
#: llama.cpp vendored in llama-cpp-python 0.3.36).
KV_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
_UNQUANTIZED_KV = ("f32", "f16", "bf16")
_KV_OPTION = {
    "cache_type_k": "--cache-type-k",
    "cache_type_v": "--cache-type-v",
    "cache_type_kv": "--cache-type",
}


def _check_context_knobs(settings: RunSettings) -> None:
    """Refuse a KV cache type llama.cpp does not know, a flash-attention value that is not
    on/off/auto, and a quantized V cache without flash attention (llama.cpp refuses to make
    that context), for every combination a sweep would load, before anything is loaded."""
    for name in ("cache_type_k", "cache_type_v", "cache_type_kv"):
        own = () if name == "cache_type_kv" else (getattr(settings, name),)
        for value in (*own, *getattr(settings, "sweep_" + name)):
            if value not in KV_CACHE_TYPES:
                _refuse(
                    name,
                    f"{_KV_OPTION[name]} {value!r} is not a KV cache type llama.cpp knows; "
                    f"allowed: {', '.join(KV_CACHE_TYPES)}",
                )
    both = settings.sweep_cache_type_k or settings.sweep_cache_type_v
    if settings.sweep_cache_type_kv and both:
        _refuse(
            "cache_type_kv",
            "--cache-type sweeps K and V together: give it, or lists of --cache-type-k and "
            "--cache-type-v (every K with every V), not both",
        )
    flashes = (settings.flash_attn, *settings.sweep_flash_attn)
    for value in flashes:
        if not isinstance(value, bool) and value != "auto":
            _refuse("flash_attn", f"--flash-attn {value!r}: allowed: on, off, auto (or 1, 0)")
    types_v = (settings.cache_type_v, *settings.sweep_cache_type_v, *settings.sweep_cache_type_kv)
    for type_v in types_v:
        if type_v not in _UNQUANTIZED_KV and False in flashes:
            _refuse(
                "cache_type_v",
                f"--cache-type-v {type_v} needs flash attention (llama.cpp refuses a quantized "
                "V cache without it); add --flash-attn on (or auto), or use --cache-type-v f16",
            )


def kv_pairs(settings: RunSettings) -> list[tuple[str, str]]:
    """The (K, V) cache types a run measures: each --cache-type value for both, else every K
    type with every V type (llama-bench's -ctk x -ctv).

    >>> kv_pairs(RunSettings(sweep_cache_type_kv=("f16", "q8_0"), flash_attn=True))
    [('f16', 'f16'), ('q8_0', 'q8_0')]
    """
    if settings.sweep_cache_type_kv:
        return [(t, t) for t in settings.sweep_cache_type_kv]
    types_k = settings.sweep_cache_type_k or (settings.cache_type_k,)
    types_v = settings.sweep_cache_type_v or (settings.cache_type_v,)
    return [(k, v) for k in types_k for v in types_v]


def clamp_ubatch(n_ubatch: int, n_batch: int) -> int:
    """The micro-batch llama.cpp really uses: never more than the batch.

    >>> clamp_ubatch(512, 256)
    256
    """
    return min(n_ubatch, n_batch)


def resolve_threads(n_threads: int, cores_physical: int) -> int:
    """The thread count a setting means: 0 is the host's physical cores.

    >>> resolve_threads(0, 8), resolve_threads(2, 8)
    (8, 2)
    """
    return n_threads or cores_physical


# Settings added after the first runs: left out of the key at these values.
_KEY_DEFAULTS: dict[str, Any] = {
    "allow_code_exec": False,
    "unsafe_code_exec": False,
    "protocol": "auto",
    "max_think_tokens": None,
    "think_budget_mode": "force",
    "think_lead_in": THINK_LEAD_IN,
    "tasks": (),
    "num_fewshot": None,
    "task_sample": None,
    "allow_concurrent": False,
    "eval_batch": 0,
    "stall_timeout_s": 300.0,  # never in the key; here so shown() leaves the default out
    "race_confidence": None,
    "race_margin": 0.0,
    "race_by": "capability_per_gb",
    "cache_type_k": "f16",
    "cache_type_v": "f16",
    "swa_full": True,
    "runtime": "",
    "sweep_cache_type_k": (),
    "sweep_cache_type_v": (),
    "sweep_cache_type_kv": (),
    "sweep_n_ctx": (),
    "sweep_swa_full": (),
}


#: The context knobs that make one variant's measurement its own ranking row, with the values
#: a run has when they are not given (a row's label names only the knobs that differ).
KNOB_DEFAULTS: dict[str, Any] = {
    "n_ctx": 2048,
    "cache_type_k": "f16",
    "cache_type_v": "f16",
    "flash_attn": False,
    "swa_full": True,
}


def knob_point(settings: RunSettings) -> tuple[Any, ...]:
    """The record's context knobs (KNOB_DEFAULTS' order): what tells apart two records of one
    variant in one run (a knob sweep measures each point as its own record).

    >>> knob_point(RunSettings(cache_type_k="q8_0", cache_type_v="q8_0", flash_attn=True))
    (2048, 'q8_0', 'q8_0', True, True)
    """
    return tuple(getattr(settings, name) for name in KNOB_DEFAULTS)


def varying_knobs(settings: typing.Iterable[RunSettings]) -> tuple[str, ...]:
    """The context knobs (KNOB_DEFAULTS names) on which these settings disagree."""
    points = {knob_point(s) for s in settings}
    return tuple(name for i, name in enumerate(KNOB_DEFAULTS) if len({p[i] for p in points}) > 1)


def knob_parts(settings: RunSettings, shown: typing.Collection[str]) -> list[str]:
    """The knobs of `shown` that differ from KNOB_DEFAULTS, as a row's label names them.

    >>> s = RunSettings(n_ctx=8192, cache_type_k="q8_0", cache_type_v="q8_0", flash_attn=True)
    >>> knob_parts(s, ("n_ctx", "cache_type_k", "cache_type_v"))
    ['n_ctx 8192', 'KV q8_0']
    >>> knob_parts(RunSettings(cache_type_k="q8_0"), ("cache_type_k",))
    ['KV q8_0/f16']
    """
    parts = []
    if "n_ctx" in shown and settings.n_ctx != KNOB_DEFAULTS["n_ctx"]:
        parts.append(f"n_ctx {settings.n_ctx}")
    k, v = settings.cache_type_k, settings.cache_type_v
    if {"cache_type_k", "cache_type_v"} & set(shown) and (k, v) != ("f16", "f16"):
        parts.append(f"KV {k}" if k == v else f"KV {k}/{v}")
    if "flash_attn" in shown and settings.flash_attn is not False:
        parts.append("FA " + ("auto" if settings.flash_attn == "auto" else "on"))
    if "swa_full" in shown and not settings.swa_full:
        parts.append("SWA windowed")
    return parts


def knob_label(name: str, settings: RunSettings, shown: typing.Collection[str]) -> str:
    """A variant x knob point's row name: "qwen2.5-coder-0.5b-instruct-q4_k_m + KV q8_0"; the
    plain name when none of the `shown` knobs differs from its default. A name that already
    ends with its knobs is kept (labelling twice changes nothing).

    >>> s = RunSettings(cache_type_k="q8_0", cache_type_v="q8_0", flash_attn=True)
    >>> knob_label(knob_label("q4_k_m", s, ["cache_type_k"]), s, ["cache_type_k"])
    'q4_k_m + KV q8_0'
    """
    suffix = "".join(" + " + part for part in knob_parts(settings, shown))
    return name if name.endswith(suffix) else name + suffix


@dataclass(frozen=True)
class SpeedResult:
    """One llama-bench style test: pp (n_prompt tokens) or tg (n_gen single-token decodes)."""

    test: str
    n_prompt: int
    n_gen: int
    n_depth: int
    samples_ns: tuple[int, ...]
    samples_ts: tuple[float, ...]
    avg_ts: float
    stddev_ts: float
    n_threads: int = 0
    n_batch: int = 0
    n_ubatch: int = 0
    n_gpu_layers: int = 0
    flash_attn: bool | str = False  # as configured: True, False or "auto"
    # llama-bench's per-test facts ("" in records made before them; type_k/type_v were always
    # llama.cpp's default f16 then): when the test started (UTC, "2026-12-06T11:02:03Z"), the
    # model as llama_model_desc names it ("qwen2 0.5B Q4_K - Medium") and the KV cache types.
    test_time: str = ""
    model_type: str = ""
    type_k: str = "f16"
    type_v: str = "f16"
    # Energy over all timed repetitions (engine/energy.py): joules (None when not measured),
    # the method ("rapl", "nvml", "powermetrics", joined with "+"; or "not available here
    # (why)"; "" in records made before energy was read) and the domains, ", "-joined.
    energy_j: float | None = None
    energy_method: str = ""
    energy_domains: str = ""

    @property
    def avg_ms(self) -> float:
        return sum(self.samples_ns) / len(self.samples_ns) / 1e6

    @property
    def tokens_timed(self) -> int:
        """Tokens processed in all timed repetitions together (what energy_j was spent on)."""
        return (self.n_prompt + self.n_gen) * len(self.samples_ns)


@dataclass(frozen=True)
class LatencyResult:
    """Time to first token: request start (tokenize the prompt text) to the first generated
    token (prompt decoded, first token picked greedily from the logits)."""

    test: str
    n_prompt: int
    samples_ns: tuple[int, ...]
    avg_ms: float
    stddev_ms: float


@dataclass(frozen=True)
class TaskScore:
    """Accuracy on one task; `acc_se` is the binomial standard error of `acc` (clustered over
    `n_clusters` clusters of `cluster_by` when n_clusters is set)."""

    task: str
    version: int
    category: str
    chance: float
    n: int
    acc: float
    acc_se: float
    acc_norm: float
    acc_norm_se: float
    elapsed_s: float
    # Generative and code tasks (multiple choice keeps the defaults):
    status: str = STATUS_OK  # or STATUS_SKIPPED (code execution off) / STATUS_ERROR
    reason: str = ""  # why skipped or failed; notes such as a refused template
    metric: str = "acc"  # "acc", or "pass@1" for code tasks
    n_timeout: int = 0  # code samples over the time limit: in n, as failures
    n_harness_error: int = 0  # samples the harness could not generate or run: not in n
    mean_thinking_chars: float = 0.0  # <think> text removed before extraction, per sample
    prompt_format: str = ""  # "chat" (the model's template) or "completion" (few-shot)
    code_exec_sandbox: str = ""  # code tasks: "bwrap", "sandbox-exec" or "none (unsafe)"
    # Protocol (edgeeval.score.protocol); "" in records made before these fields existed:
    protocol: str = ""  # "instruct" (chat template), "completion" or "loglikelihood"
    thinking: str = ""  # "on" / "off" (a reasoning template's mode), "" for other models
    n_cut_in_thinking: int = 0  # answers that hit the token budget while still thinking
    n_thinking_forced: int = 0  # answers whose thinking was closed at its budget (forcing)
    n_shot: int | None = None  # few-shot examples in each prompt
    n_source: int | None = None  # items the task's source holds (lm-eval's n-samples original)
    # Clustered SEs (metrics.clustered_se): the task file's `cluster_by` key (an MMLU subject)
    # and how many clusters the scored items fell in; "" and 0 when the SEs are unclustered
    cluster_by: str = ""
    n_clusters: int = 0


@dataclass(frozen=True)
class SampleResult:
    """One scored item, kept so a task can be re-scored without the model."""

    task: str
    item_id: str
    gold: int
    logliks: tuple[float, ...]
    choice_chars: tuple[int, ...]
    cluster: str = ""  # the item's cluster id (its MMLU subject) under the task's cluster_by
    cluster_by: str = ""  # that key ("subject"); both "" for a task without clusters


@dataclass(frozen=True)
class MemoryResult:
    """Memory of the child process, sampled from the parent.

    `peak_rss_bytes` is the sampled maximum; `os_maxrss_bytes` is what the kernel reports for
    the child at exit (getrusage via wait4), a cross-check of the sampler.
    """

    peak_rss_bytes: int
    peak_uss_bytes: int
    os_maxrss_bytes: int
    n_samples: int
    interval_ms: float
    rss_after_load_bytes: int = 0
    use_mmap: bool = True
    use_mlock: bool = False
    peak_footprint_bytes: int | None = None  # macOS phys_footprint (includes Metal buffers)
    peak_gpu_bytes: int | None = None  # CUDA device memory of the process (NVML)
    # The accuracy phase decodes `eval_batch` sequences at once; its KV cache is in the peaks
    # above. `speed_peak_rss_bytes`: the peak before that phase (load + speed tests, batch 1).
    eval_batch: int = 1
    speed_peak_rss_bytes: int | None = None
    speed_peak_gpu_bytes: int | None = None  # NVML's figure up to the accuracy phase

    @property
    def model_peak_bytes(self) -> int:
        """The peak that ranks a variant (cap/GB, budgets, comparisons).

        Host memory: with a batched accuracy phase, the peak of load + speed tests (one
        sequence), so that the evaluation's own batch size does not change the ranking;
        otherwise the whole run's peak RSS. Plus, on CUDA builds where NVML answered, the
        process's device memory over the same span: layers offloaded to the GPU hold their
        weights and KV cache there, outside the resident set. (macOS's footprint is kept but
        not added: with mmap'd weights it leaves out the weights and overlaps RSS elsewhere.)
        """
        batched = self.eval_batch > 1 and bool(self.speed_peak_rss_bytes)
        host = self.speed_peak_rss_bytes if batched else self.peak_rss_bytes
        device = self.peak_gpu_bytes
        if batched and self.speed_peak_gpu_bytes is not None:
            device = self.speed_peak_gpu_bytes
        return (host or 0) + (device or 0)


@dataclass(frozen=True)
class KvPoint:
    """KV cache bytes at one context length: as the run allocates it (`kv_bytes`) and with
    sliding-window layers holding only their window (`windowed_bytes`, llama.cpp's swa_full
    off, as llama-server runs by default). The two are equal for models without SWA layers."""

    n_ctx: int
    kv_bytes: int
    windowed_bytes: int


@dataclass(frozen=True)
class KvCacheLayout:
    """A variant's KV cache as llama.cpp lays it out: bytes per cache cell summed over the
    full-attention layers and over the sliding-window layers, the window and micro-batch that
    size the SWA cache, and whether the run gave the SWA layers a full-size cache. The bytes at
    any context length follow from these (metrics.kv_cache_at); `points` holds the figures at
    the standard lengths up to the trained context, and at the run's own n_ctx."""

    full_bytes_per_cell: int
    swa_bytes_per_cell: int = 0
    n_swa: int = 0
    n_ubatch: int = 512
    swa_full: bool = True
    cache_type: str = "f16"  # K and V type, or "K/V" when they differ ("q8_0/f16")
    points: tuple[KvPoint, ...] = ()


@dataclass(frozen=True)
class VariantInfo:
    name: str
    family: str
    model: str
    quant: str
    kind: str
    size_bytes: int
    sha256: str
    params: int | None = None
    # an emulated format (a derived FP8 variant: "FP8 E4M3 (block=128x128) in 14 tensors,
    # stored as F16"): accuracy is the format's, speed and memory are not; storage_bytes is the
    # size the format would take, which the ranking uses in place of memory
    emulated: str = ""
    storage_bytes: int | None = None


@dataclass(frozen=True)
class ModelRecord:
    """The outcome of measuring one variant in one run, ok or not."""

    run_id: str
    variant: VariantInfo
    host: HostInfo
    settings: RunSettings
    status: str
    started_at: str
    duration_s: float
    load_s: float | None = None
    speed: tuple[SpeedResult, ...] = ()
    tasks: tuple[TaskScore, ...] = ()
    memory: MemoryResult | None = None
    error: str = ""
    stderr_tail: str = ""
    n_ctx_train: int | None = None
    kv_cache_bytes: int | None = None
    weights_bytes: int | None = None  # tensor data in the GGUF (what tg reads per token)
    n_params: int | None = None  # parameters, as llama.cpp counts them
    ttft: tuple[LatencyResult, ...] = ()
    kv_cache: KvCacheLayout | None = None  # per-context KV figures (absent in older records)

    @property
    def key(self) -> str:
        """Resume key: variant + file hash + settings + host."""
        return record_key(self.variant.name, self.variant.sha256, self.settings, self.host)

    def speed_of(self, prefix: str) -> SpeedResult | None:
        return next((s for s in self.speed if s.test.startswith(prefix)), None)


def record_key(name: str, sha256: str, settings: RunSettings, host: HostInfo) -> str:
    """What makes two measurements the same measurement (for --resume and imports)."""
    return f"{name}:{sha256}:{settings.key()}:{host.host_id}"


def to_dict(record: Any) -> dict[str, Any]:
    """A (nested) record as plain data: nested dataclasses become dicts, tuples stay tuples
    (JSON writes them as lists; `from_dict` turns them back into tuples)."""
    return dataclasses.asdict(record)


def to_json(record: Any) -> str:
    return json.dumps(to_dict(record), sort_keys=True)


def from_dict(cls: type[T], data: dict[str, Any], *, strict: bool = False) -> T:
    """Rebuild a (nested) record dataclass from `to_dict` output.

    Unknown keys are ignored and missing ones take their defaults, so records stored by older
    versions still load. With `strict` (what parent and child processes exchange, written by
    the same code) an unknown or missing key raises ValueError naming it, at every level.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if strict:
        unknown = sorted(set(data) - {f.name for f in fields})
        missing = [f.name for f in fields if f.name not in data]
        if unknown or missing:
            raise ValueError(f"{cls.__name__}: unknown keys {unknown}, missing keys {missing}")
    kwargs = {}
    for f in fields:
        if f.name in data:
            kwargs[f.name] = _convert(hints[f.name], data[f.name], strict)
    return cls(**kwargs)


def _convert(tp: Any, value: Any, strict: bool) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(inner[0], value, strict)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]
            return tuple(_convert(args[0], v, strict) for v in value)
        return tuple(_convert(a, v, strict) for a, v in zip(args, value, strict=True))
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, strict=strict)  # type: ignore[arg-type]
    return value


@dataclass(frozen=True)
class DomainFidelity:
    """Fidelity on one domain of a per-domain corpus (`--corpus domains`): the same statistics
    as FidelityResult over the tokens scored in that domain's chunks. `status` is "ok", or
    "missing" when the domain gave no scored token (its text is shorter than one chunk, the
    reason in `note`); a missing domain's metrics are None, never 0."""

    domain: str
    status: str
    n_tokens: int = 0
    n_chunks: int = 0
    ppl: float | None = None
    ppl_ref: float | None = None
    ln_ppl_ratio: float | None = None
    ln_ppl_ratio_se: float | None = None
    kld_mean: float | None = None
    kld_se: float | None = None
    kld_p99: float | None = None
    same_top_pct: float | None = None
    same_top_se_pct: float | None = None
    rms_dp_pct: float | None = None
    note: str = ""
    source: str = ""  # where the domain's samples came from (shipped file, or a Hub dataset)


#: The context knobs a fidelity result records (the context size is its chunk's, n_ctx: a
#: larger cache leaves a chunk's logits as they are, as llama.cpp attends to the used cells).
_FIDELITY_KNOBS = ("cache_type_k", "cache_type_v", "flash_attn", "swa_full")


@dataclass(frozen=True)
class FidelityResult:
    """Quant fidelity of one variant against a reference on one corpus (llama-perplexity's
    method): perplexities, ln(PPL(Q)/PPL(ref)), KL divergence in nats per scored token, and
    token-probability statistics in percent (`*_pct`). Metrics are None when `status` is not ok.
    """

    run_id: str
    variant: str
    reference: str
    status: str
    corpus: str
    corpus_sha256: str
    n_ctx: int
    n_chunks: int
    variant_sha256: str = ""
    reference_sha256: str = ""
    n_tokens: int = 0
    ppl: float | None = None
    ppl_se: float | None = None
    ppl_ref: float | None = None
    ppl_ref_se: float | None = None
    ln_ppl_ratio: float | None = None
    ln_ppl_ratio_se: float | None = None
    kld_mean: float | None = None
    kld_se: float | None = None
    kld_max: float | None = None
    kld_p999: float | None = None
    kld_p99: float | None = None
    kld_p90: float | None = None
    kld_median: float | None = None
    same_top_pct: float | None = None
    same_top_se_pct: float | None = None
    rms_dp_pct: float | None = None
    rms_dp_se_pct: float | None = None
    elapsed_s: float = 0.0
    reference_elapsed_s: float = 0.0
    host_id: str = ""
    llama_cpp_python_version: str = ""
    started_at: str = ""
    notes: str = ""
    error: str = ""
    # per domain, in the corpus's order, when the corpus has domains (`--corpus domains`)
    domains: tuple[DomainFidelity, ...] = ()
    # The variant's context knob point (the reference's pass is always F16 KV, flash attention
    # off, full-size sliding-window cache): its KV cache types, flash attention and windowing.
    # Results stored before these fields were measured so, and read back with these defaults.
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    flash_attn: bool | str = False
    swa_full: bool = True

    @property
    def point_name(self) -> str:
        """The variant with its knob point's non-default knobs, "q4_k_m + KV q8_0 + FA on":
        what tells two results of one variant and reference apart (the store's key); the plain
        name for a result at the defaults (every result stored before knob points)."""
        knobs = types.SimpleNamespace(**{k: getattr(self, k) for k in _FIDELITY_KNOBS})
        point = typing.cast(RunSettings, knobs)  # only the knobs' values are read
        return knob_label(self.variant, point, _FIDELITY_KNOBS)


@dataclass(frozen=True)
class GenSampleResult:
    """One generated answer of a generate or code task, kept so the task can be re-scored
    without the model: a generate sample by extracting again from `output`, a code sample by
    running prompt + output + the task's test again.

    `status` is "ok" or "error" for generate samples and "passed", "failed", "timeout" or
    "harness_error" for code samples; only ok, passed and failed samples count in the score.
    """

    task: str
    item_id: str
    kind: str  # "generate" or "code"
    status: str
    prompt: str
    output: str  # as generated (thinking included), without the stop string
    gold: str = ""
    extracted: str = ""  # "" when the extractor found nothing; code: the program run (instruct)
    correct: bool = False
    extractor: str = ""
    thinking_chars: int = 0
    n_prompt_tokens: int = 0
    n_gen_tokens: int = 0
    stop_reason: str = ""  # "eog", "stop", "max_tokens" or "n_ctx"
    reason: str = ""  # why a sample failed, timed out or errored
    thinking: str = ""  # the reasoning template's mode: "on", "off" or "" (see TaskScore)
    thinking_forced: bool = False  # the end-of-thinking marker was put in at the budget
    cluster: str = ""  # the item's cluster id under the task's cluster_by (SampleResult)
    cluster_by: str = ""


@dataclass(frozen=True)
class ClusterInfo:
    """The cluster a run used: its address, the mode and the Ray nodes it found."""

    address: str
    mode: str
    nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunManifest:
    """A run's run.json: what was asked (models, settings) and where, written before anything
    runs, by whoever drives the run (pipeline.bench, cluster.driver). Read back with
    `from_dict`, so older manifests (missing keys) still load. `resumed_at` lists each later
    invocation; `allow_concurrent` is sticky (once any invocation measured without the host
    lock); `cluster` is None for a single-machine run."""

    run_id: str
    host: HostInfo | None = None
    settings: RunSettings | None = None
    variants: tuple[str, ...] = ()
    created_at: str = ""
    resumed_at: tuple[str, ...] = ()
    allow_concurrent: bool = False
    cluster: ClusterInfo | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """As run.json holds it: `created_at`, `resumed_at` and `cluster` only when they have
        a value (a single-machine run wrote no cluster, a first invocation no resumed_at)."""
        data = to_dict(self)
        for name in ("created_at", "resumed_at", "cluster"):
            if not data[name]:
                data.pop(name)
        return data
