"""Recipes, build planning and real builds through llama.cpp's quantizer on tiny models that the
tests write themselves (random weights, a byte-fallback SentencePiece vocabulary)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeeval.catalog.models import load_catalog
from edgeeval.errors import ConfigError, EdgeevalError
from edgeeval.quant import build as q

REPO = Path(__file__).resolve().parent.parent


def write_tiny_llama(
    path: Path,
    *,
    n_embd: int = 256,
    n_ff: int = 512,
    n_layer: int = 2,
    n_head: int = 4,
    seed: int = 0,
    chat_template: str | None = None,
) -> Path:
    """A llama-architecture GGUF with random F32 weights that llama.cpp loads and runs.

    The vocabulary is SentencePiece style: <unk> <s> </s>, the 256 byte tokens (so any text
    tokenizes), then a few letters and words. Weights are scaled so the logits spread over a
    few nats, which keeps the next-token distributions far from uniform. `chat_template`, when
    given, is stored as tokenizer.chat_template.
    """
    import gguf

    rng = np.random.default_rng(seed)
    words = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    words += ["\u2581" + w for w in ("the", "a", "of", "and", "to", "in", "is")] + ["\u2581"]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + words
    writer = gguf.GGUFWriter(str(path), "llama")
    for add, value in (
        (writer.add_context_length, 512),
        (writer.add_embedding_length, n_embd),
        (writer.add_block_count, n_layer),
        (writer.add_feed_forward_length, n_ff),
        (writer.add_head_count, n_head),
        (writer.add_head_count_kv, n_head),
        (writer.add_rope_dimension_count, n_embd // n_head),
        (writer.add_layer_norm_rms_eps, 1e-5),
        (writer.add_file_type, 0),
    ):
        add(value)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * 259 + [-float(i) for i in range(len(words))])
    writer.add_token_types([2, 3, 3] + [6] * 256 + [1] * len(words))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    def mat(rows: int, cols: int, gain: float = 1.0) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * gain / np.sqrt(cols)).astype(np.float32)

    writer.add_tensor("token_embd.weight", mat(len(tokens), n_embd, np.sqrt(n_embd)))
    for i in range(n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{name}.weight", mat(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", mat(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", mat(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", mat(n_embd, n_ff))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    writer.add_tensor("output.weight", mat(len(tokens), n_embd, 3.0))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def tiny_catalog(tmp_path: Path, model: Path, recipes: dict, variants: dict[str, str]) -> Path:
    """A catalog with the tiny model as `tiny-f32` and one derived variant per {name: recipe}."""
    lines = [
        "variants:",
        f"  - {{name: tiny-f32, family: smollm, model: tiny, quant: F32, kind: base, "
        f"license: MIT, source: {{local: {{path: '{model}'}}}}}}",
    ]
    for name, recipe in variants.items():
        base = "tiny-f32" if ":" not in recipe else recipe.split(":")[0]
        lines.append(
            f"  - {{name: {name}, family: smollm, model: tiny, quant: {name.upper()}, "
            f"kind: base, license: MIT, source: {{derived: {{base: {base}, recipe: "
            f"'{recipe.split(':')[-1]}'}}}}}}"
        )
    lines += ["recipes: " + json.dumps(recipes), "sets:", "  default: [tiny-f32]"]
    path = tmp_path / "models.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


# --- recipe validation ---


def _parse(raw: object) -> q.Recipe:
    return q.parse_recipe("r1", raw, path="models.yaml")


@pytest.mark.parametrize(
    "raw, key, words",
    [
        (
            {"ftype": "Q8_0", "overrides": [{"ffn_.*": "Q9_0"}]},
            "overrides[0]",
            ["unknown tensor type 'Q9_0'", "did you mean 'Q8_0'"],
        ),
        (
            {"ftype": "Q8_0", "overrides": [{"ffn_(up": "Q4_0"}]},
            "overrides[0]",
            ["bad regex 'ffn_(up'"],
        ),
        ({"ftype": "Q8_0", "overrides": []}, "overrides", ["non-empty list"]),
        (
            {"ftype": "Q8_0", "overrides": [{"a": "Q4_0", "b": "Q4_0"}]},
            "overrides[0]",
            ["one-entry mapping"],
        ),
        (
            {"ftype": "Q8_0", "overrides": [{"(?P<x>attn)": "Q4_0"}]},
            "overrides[0]",
            ["Python-only regex", "std::regex"],
        ),
        ({"ftype": "Q9_K_M"}, "ftype", ["unknown file type 'Q9_K_M'"]),
        (
            {"ftype": "NVFP4"},
            "ftype",
            ["cannot write it as a whole-file type", "overrides that map tensors to NVFP4"],
        ),
        (
            {"ftype": "F16", "overrides": [{"ffn": "Q4_0"}]},
            "overrides",
            ["only when the file type"],
        ),
        ({"ftype": "Q8_0", "output_type": "Q8_K"}, "output_type", ["not a weight type"]),
        (
            {"ftype": "Q8_0", "token_embedding_type": "IQ2_XXS"},
            "token_embedding_type",
            ["importance matrix"],
        ),
        ({"ftype": "Q8_0", "pure": "yes"}, "pure", ["true or false"]),
        ({"ftpye": "Q8_0"}, "ftpye", ["did you mean 'ftype'"]),
        ({"pure": True}, "ftype", ["missing required key"]),
    ],
)
def test_bad_recipes_are_refused_naming_file_recipe_and_key(raw, key, words):
    with pytest.raises(ConfigError) as info:
        _parse(raw)
    message = str(info.value)
    assert info.value.key == key
    assert "models.yaml: entry 'recipes.r1'" in message and f"key '{key}'" in message
    for word in words:
        assert word in message, message


def test_a_good_recipe_is_normalised_and_hashed_by_content():
    recipe = _parse(
        {"ftype": "q8_0", "pure": True, "overrides": [{"ffn_": "nvfp4"}], "description": "x"}
    )
    assert recipe.ftype == "Q8_0" and recipe.overrides == (("ffn_", "NVFP4"),)
    same = q.parse_recipe(
        "other-name",
        {"ftype": "Q8_0", "pure": True, "overrides": [{"ffn_": "NVFP4"}]},
        path="m.yaml",
    )
    assert recipe.digest() == same.digest()
    assert (
        recipe.digest()
        != _parse({"ftype": "Q8_0", "pure": True, "overrides": [{"ffn_": "MXFP4"}]}).digest()
    )


def test_types_llama_cpp_knows_include_both_fp4_formats_and_bf16():
    types = q.known_types()
    assert types["MXFP4"] == 39 and types["NVFP4"] == 40 and types["BF16"] == 30
    assert "FP8" not in " ".join(types)  # this llama.cpp has no FP8 weight type


def test_derived_variant_with_unknown_recipe_is_refused(tmp_path, tiny_model):
    path = tiny_catalog(tmp_path, tiny_model, {"q8_0": {"ftype": "Q8_0"}}, {"t-q8": "q8-0"})
    with pytest.raises(ConfigError) as info:
        q.load_recipes(load_catalog(path))
    assert info.value.entry == "t-q8" and info.value.key == "source.derived.recipe"
    assert "did you mean 'q8_0'" in str(info.value)


def test_repo_catalog_recipes_and_quant_compare_set_are_valid():
    catalog = load_catalog(REPO / "models.yaml")
    recipes = q.load_recipes(catalog)
    assert {"f16", "q8_0", "q6_k", "q4_k_m", "q4_0", "nvfp4", "mxfp4", "fp4-ffn-q8-attn"} <= set(
        recipes
    )
    members = [catalog.get(n) for n in catalog.sets["quant-compare"]]
    assert {recipes[v.source.recipe].name for v in members} == {
        "f16",
        "q8_0",
        "q4_k_m",
        "nvfp4",
        "mxfp4",
        "fp4-ffn-q8-attn",
    }
    mixed = recipes["fp4-ffn-q8-attn"]
    assert q._recipe_type(mixed, "blk.3.ffn_down.weight", True) == "MXFP4"
    assert q._recipe_type(mixed, "blk.3.attn_v.weight", True) == "Q8_0"


# --- planning (pure) ---


@pytest.mark.parametrize(
    "wanted, row, got",
    [
        ("MXFP4", 64, "MXFP4"),
        ("NVFP4", 96, "Q5_0"),
        ("Q6_K", 896, "Q8_0"),
        ("Q4_K", 896, "Q5_0"),
        ("Q2_K", 96, "Q4_0"),
        ("Q8_0", 48, "F16"),
        ("NVFP4", 40, "F16"),
        ("F16", 7, "F16"),
    ],
)
def test_fit_type_falls_back_when_rows_do_not_fit_blocks(wanted, row, got):
    assert q.fit_type(wanted, row) == got


def test_plan_first_match_wins_and_fallbacks_are_pinned_first():
    recipe = _parse(
        {
            "ftype": "Q8_0",
            "pure": True,
            "output_type": "Q6_K",
            "overrides": [{"ffn_down": "NVFP4"}, {"ffn_": "MXFP4"}],
        }
    )
    tensors = [
        q.Tensor("blk.0.ffn_down.weight", (96, 8), "F32", 768),
        q.Tensor("blk.0.ffn_up.weight", (64, 96), "F32", 6144),
        q.Tensor("blk.0.ffn_norm.weight", (64,), "F32", 64),
        q.Tensor("output.weight", (96, 10), "F32", 960),
    ]
    plan = q.plan_build(recipe, tensors)
    assert plan.fixed == {
        "blk.0.ffn_down.weight": "Q5_0",
        "blk.0.ffn_up.weight": "MXFP4",
        "output.weight": "Q8_0",
    }
    assert plan.overrides[0] == (r"^blk\.0\.ffn_down\.weight$", "Q5_0")
    assert plan.overrides[1:] == recipe.overrides and plan.output_type == "Q8_0"
    assert {(f.tensor, f.wanted, f.got, f.by) for f in plan.fallbacks} == {
        ("blk.0.ffn_down.weight", "NVFP4", "Q5_0", "edgeeval"),
        ("output.weight", "Q6_K", "Q8_0", "edgeeval"),
    }


def test_llama_cpp_fallbacks_are_read_from_its_log():
    log = (
        "[  7/ 21] blk.0.ffn_down.weight - [352, 256, 1, 1], type = f32, warning: "
        "blk.0.ffn_down.weight                - ncols    352 not divisible by 256 (required "
        "for type    q4_K) -> falling back to    q5_0\nconverting to q5_0 .. done\n"
    )
    assert q.llama_fallbacks(log) == [
        q.Fallback("blk.0.ffn_down.weight", "Q4_K", "Q5_0", 352, "llama.cpp")
    ]


# --- real builds (llama.cpp's quantizer on the tiny model) ---

MIXED = {
    "ftype": "Q8_0",
    "pure": True,
    "output_type": "Q6_K",
    "overrides": [
        {r"ffn_(gate|up)\.weight$": "NVFP4"},
        {r"ffn_": "MXFP4"},
        {r"attn_q\.weight$": "Q4_0"},
    ],
}


@pytest.mark.llama
def test_built_variant_has_the_type_histogram_its_recipe_asks(tmp_path, tiny_model):
    catalog = load_catalog(
        tiny_catalog(tmp_path, tiny_model, {"mixed": MIXED}, {"t-mixed": "mixed"})
    )
    info = q.build_variant(catalog.get("t-mixed"), catalog)
    # 2 layers: gate+up -> NVFP4, down -> MXFP4, attn_q -> Q4_0, attn_k/v/output and the
    # token embedding -> Q8_0 (pure: the file type's default), output -> Q6_K, norms stay F32.
    assert info.type_counts == {"NVFP4": 4, "MXFP4": 2, "Q4_0": 2, "Q8_0": 7, "Q6_K": 1, "F32": 5}
    assert q.histogram(q.read_tensors(info.path))[0] == info.type_counts
    assert info.fallbacks == () and not info.requantized and info.recipe == "mixed"
    assert info.bits_per_weight == pytest.approx(info.size_bytes * 8 / info.n_params)
    assert info.source_types == {"F32": 21}
    assert json.loads(q.sidecar_path(Path(info.path)).read_text())["sha256"] == info.sha256


@pytest.mark.llama
def test_rebuild_with_same_recipe_and_source_is_a_cache_hit(tmp_path, tiny_model):
    catalog = load_catalog(
        tiny_catalog(tmp_path, tiny_model, {"q8": {"ftype": "Q8_0"}}, {"t-q8": "q8"})
    )
    first = q.build_variant(catalog.get("t-q8"), catalog)
    mtime = Path(first.path).stat().st_mtime_ns
    seen: list[str] = []
    again = q.build_variant(catalog.get("t-q8"), catalog, progress=seen.append)
    assert again == first and Path(first.path).stat().st_mtime_ns == mtime
    assert any("cached build" in m for m in seen)
    changed = load_catalog(
        tiny_catalog(tmp_path, tiny_model, {"q8": {"ftype": "Q8_0", "pure": True}}, {"t-q8": "q8"})
    )
    assert q.build_variant(changed.get("t-q8"), changed).recipe_hash != first.recipe_hash


@pytest.mark.llama
def test_requantized_builds_are_labelled(tmp_path, tiny_model):
    catalog = load_catalog(
        tiny_catalog(
            tmp_path,
            tiny_model,
            {"q8": {"ftype": "Q8_0"}, "q4": {"ftype": "Q4_0"}},
            {"t-q8": "q8", "t-q4": "t-q8:q4"},
        )
    )
    info = q.build_variant(catalog.get("t-q4"), catalog)
    assert info.requantized and info.base == "t-q8" and info.base_quant == "T-Q8"
    assert "Q4_0" in info.type_counts


@pytest.mark.llama
def test_rows_that_do_not_fit_fall_back_cleanly_and_are_reported(tmp_path):
    model = write_tiny_llama(tmp_path / "odd.gguf", n_ff=352)  # ffn_down rows of 352 = 11 x 32
    recipes = {
        "nv": {"ftype": "Q8_0", "pure": True, "overrides": [{"ffn_": "NVFP4"}]},
        "k4": {"ftype": "Q4_K_M", "pure": True},
    }
    catalog = load_catalog(tiny_catalog(tmp_path, model, recipes, {"t-nv": "nv", "t-k4": "k4"}))
    nv = q.build_variant(catalog.get("t-nv"), catalog)
    assert {(f.tensor, f.wanted, f.got, f.by) for f in nv.fallbacks} == {
        (f"blk.{i}.ffn_down.weight", "NVFP4", "Q5_0", "edgeeval") for i in range(2)
    }
    assert nv.type_counts["NVFP4"] == 4 and nv.type_counts["Q5_0"] == 2
    k4 = q.build_variant(catalog.get("t-k4"), catalog)
    assert {(f.tensor, f.wanted, f.got, f.by) for f in k4.fallbacks} == {
        (f"blk.{i}.ffn_down.weight", "Q4_K", "Q5_0", "llama.cpp") for i in range(2)
    }


@pytest.mark.llama
def test_cli_quantize_lists_recipes_and_builds(tmp_path, tiny_model, capsys):
    from edgeeval.cli.main import main

    path = tiny_catalog(tmp_path, tiny_model, {"q8": {"ftype": "Q8_0"}}, {"t-q8": "q8"})
    assert main(["--catalog", str(path), "quantize", "--list"]) == 0
    assert "q8 " in capsys.readouterr().out
    assert main(["--catalog", str(path), "quantize", "t-q8"]) == 0
    out = capsys.readouterr().out
    assert "t-q8" in out and "Q8_0:" in out
    with pytest.raises(EdgeevalError, match="not a derived variant"):
        q.derived_targets(load_catalog(path), ["tiny-f32"])
