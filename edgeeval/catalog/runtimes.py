"""Runtime profiles (`--as`): the context defaults each runtime loads a model with, so a run
measures the model as the user will run it. Each value was read from the runtime's own source
at the version named; README.md ("Runtime profiles") cites the file of each.

A profile sets RunSettings fields; options given on the command line (and --profile) override
them. Values a runtime decides per model or per machine are noted, not guessed:

- llama-server's context is the model's trained length (-c 0). One run measures several
  models under one n_ctx, so the profile leaves n_ctx to --n-ctx (trained_ctx below).
- Ollama's num_ctx depends on the GPU memory (4096 below 23 GiB, 32768 below 47 GiB, else
  262144); the profile takes the tier of a machine without a big GPU: 4096.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeeval.errors import ConfigError


@dataclass(frozen=True)
class RuntimeProfile:
    """A runtime's context defaults. n_ctx None: the model's trained length. flash_attn True,
    False or "auto"; cache types as ggml names them; swa_full False = a windowed SWA cache."""

    name: str
    version: str
    n_ctx: int | None
    flash_attn: bool | str
    cache_type_k: str
    cache_type_v: str
    swa_full: bool
    n_batch: int
    n_ubatch: int
    source: str  # where the values were read
    note: str = ""

    def settings(self) -> dict[str, Any]:
        """The RunSettings fields this profile sets (n_ctx only when it is a number)."""
        fields: dict[str, Any] = {
            "flash_attn": self.flash_attn,
            "cache_type_k": self.cache_type_k,
            "cache_type_v": self.cache_type_v,
            "swa_full": self.swa_full,
            "n_batch": self.n_batch,
            "n_ubatch": self.n_ubatch,
            "runtime": self.name,
        }
        if self.n_ctx is not None:
            fields["n_ctx"] = self.n_ctx
        return fields


_LLAMA_CPP = "llama.cpp 0c1e570 (vendored in llama-cpp-python 0.3.36)"

PROFILES: dict[str, RuntimeProfile] = {
    p.name: p
    for p in (
        RuntimeProfile(
            name="llama-server",
            version=_LLAMA_CPP,
            n_ctx=None,
            flash_attn="auto",
            cache_type_k="f16",
            cache_type_v="f16",
            swa_full=False,
            n_batch=2048,
            n_ubatch=512,
            source="common/common.h (common_params), common/arg.cpp, tools/server/server.cpp",
            note="-c 0 = the trained context (give --n-ctx); 4 slots sharing one unified "
            "KV cache of n_ctx cells (-np -1 = auto), so the KV size is that of n_ctx",
        ),
        RuntimeProfile(
            name="ollama",
            version="v0.33.0-rc2 (ollama/ollama fb30760, 2026-08-21)",
            n_ctx=4096,
            flash_attn="auto",
            cache_type_k="f16",
            cache_type_v="f16",
            swa_full=False,
            n_batch=512,
            n_ubatch=512,
            source="envconfig/config.go, api/types.go (DefaultOptions), server/routes.go, "
            "llm/llama_server.go",
            note="runs llama-server with -c num_ctx*OLLAMA_NUM_PARALLEL (1), -b/-ub num_batch, "
            "--flash-attn auto where supported, -ctk/-ctv only when OLLAMA_KV_CACHE_TYPE is "
            "set; num_ctx 4096 is the tier below 23 GiB of VRAM (32768 / 262144 above)",
        ),
        RuntimeProfile(
            name="lmstudio",
            version="0.3.x app (closed source; values not confirmed from its source)",
            n_ctx=4096,
            flash_attn=False,
            cache_type_k="f16",
            cache_type_v="f16",
            swa_full=False,
            n_batch=512,
            n_ubatch=512,
            source="lmstudio-js LLMLoadModelConfig (contextLength, evalBatchSize, "
            "flashAttention, llamaK/VCacheQuantizationType are optional, unset = the engine's "
            "default); the defaults themselves live in the closed app",
            note="unconfirmed: the app's shipped defaults could not be read from a public source",
        ),
        RuntimeProfile(
            name="llama-cpp-python",
            version="0.3.36",
            n_ctx=512,
            flash_attn=False,
            cache_type_k="f16",
            cache_type_v="f16",
            swa_full=True,
            n_batch=512,
            n_ubatch=512,
            source="llama_cpp/llama.py Llama.__init__ (n_ctx=512, n_batch=512, n_ubatch=512, "
            "flash_attn=False, swa_full/type_k/type_v None = llama_context_default_params: "
            "swa_full true, f16)",
        ),
    )
}


def runtime_profile(name: str) -> RuntimeProfile:
    """The profile called `name`; ConfigError naming --as and the allowed names otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(
            f"--as {name!r} is not a runtime profile; allowed: {', '.join(PROFILES)}",
            path="runtime profiles",
        ) from None
