from pathlib import Path

import pytest

from edgeeval.catalog.models import load_catalog
from edgeeval.catalog.stack import load_catalogs
from edgeeval.errors import ConfigError, UnknownNameError

REPO = Path(__file__).resolve().parent.parent

GOOD = """
variants:
  - name: a
    family: qwen
    model: A
    quant: Q8_0
    kind: instruct
    license: mit
    source: {hub: {repo_id: org/a, filename: a.gguf}}
sets:
  default: [a]
"""


def test_repo_catalog_covers_the_four_families_and_embeds_three_models():
    catalog = load_catalog(REPO / "models.yaml")
    families = {v.family for v in catalog.variants.values()}
    assert {"qwen", "deepseek", "mimo", "gemma"} <= families
    default = catalog.select()
    assert [v.source.kind for v in default] == ["pypi"] * 3
    assert catalog.get("gemma-3-270m-q4_k_m").kind == "base"
    assert all(v.sha256 and v.size_bytes for v in default)


@pytest.mark.parametrize(
    "old, new, key, entry",
    [
        ("    quant: Q8_0\n", "    quant: Q8_0\n    quantz: x\n", "quantz", "a"),
        ("    license: mit\n", "", "license", "a"),
        ("    quant: Q8_0\n", "    quant: Q8_0\n    sha256: abc123\n", "sha256", "a"),
        ("    quant: Q8_0\n", "    quant: Q8_0\n    size_bytes: -5\n", "size_bytes", "a"),
        ("filename: a.gguf", "filenam: a.gguf", "source.hub.filenam", "a"),
        ("family: qwen", "family: 'Llama 3!'", "family", "a"),
        ("default: [a]", "default: [b]", "sets", "default"),
    ],
)
def test_broken_catalog_names_file_entry_and_key(tmp_path, old, new, key, entry):
    path = tmp_path / "models.yaml"
    assert old in GOOD
    path.write_text(GOOD.replace(old, new))
    with pytest.raises(ConfigError) as info:
        load_catalog(path)
    message = str(info.value)
    assert str(path) in message
    assert f"key '{key}'" in message
    assert f"entry '{entry}'" in message


def test_duplicate_names_are_rejected(tmp_path):
    body = GOOD.split("sets:")[0]
    entry = body.split("variants:\n")[1]
    path = tmp_path / "models.yaml"
    path.write_text(body + entry + "sets:\n  default: [a]\n")
    with pytest.raises(ConfigError, match="duplicate name"):
        load_catalog(path)


def test_unknown_key_suggests_the_close_one(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text(GOOD.replace("    quant: Q8_0\n", "    quant: Q8_0\n    licence: x\n"))
    with pytest.raises(ConfigError, match="did you mean 'license'"):
        load_catalog(path)


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text("variants: [\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_catalog(path)
    assert str(path) in str(info.value)


def test_unknown_model_name_suggests_the_closest():
    catalog = load_catalog(REPO / "models.yaml")
    with pytest.raises(UnknownNameError) as info:
        catalog.select(["qwen3-0.6b-q8"])
    assert "did you mean 'qwen3-0.6b-q8_0'" in str(info.value)
    assert info.value.suggestions[0] == "qwen3-0.6b-q8_0"


def test_sets_expand_and_explicit_names_mix():
    catalog = load_catalog(REPO / "models.yaml")
    names = [v.name for v in catalog.select(["tiny", "qwen3-0.6b-q8_0"])]
    assert names == ["smollm2-135m-instruct-q4_1", "qwen3-0.6b-q8_0"]


def test_any_architecture_is_a_family(tmp_path):
    """Llama, Phi or Mistral files are no longer refused for their family."""
    path = tmp_path / "models.yaml"
    path.write_text(GOOD.replace("family: qwen", "family: Phi3"))
    assert load_catalog(path).get("a").family == "phi3"


def _user_catalog(tmp_path, text, name="user.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_catalog_option_adds_to_the_built_in_catalog(tmp_path):
    extra = _user_catalog(
        tmp_path,
        GOOD.replace("default: [a]", "laptop: [a, qwen3-0.6b-q8_0, ./mine.gguf, hf:o/r:Q8_0]"),
    )
    catalog = load_catalogs(extra)
    assert "a" in catalog.variants and "qwen3-0.6b-q8_0" in catalog.variants
    assert catalog.sets["laptop"] == ("a", "qwen3-0.6b-q8_0", "./mine.gguf", "hf:o/r:Q8_0")
    assert catalog.sets["default"] == load_catalog(REPO / "models.yaml").sets["default"]


def test_user_level_catalog_is_read_and_may_redefine_a_set(tmp_path, monkeypatch):
    config = tmp_path / "config"
    config.mkdir()
    _user_catalog(
        config, "sets:\n  default: [smollm2-135m-instruct-q4_1, ollama:llama3.2]\n", "models.yaml"
    )
    monkeypatch.setenv("EDGEEVAL_CONFIG_DIR", str(config))
    catalog = load_catalogs()
    assert catalog.sets["default"] == ("smollm2-135m-instruct-q4_1", "ollama:llama3.2")
    assert str(config / "models.yaml") in catalog.path
    # Without the resolver (the CLI passes one) a spec in a set is a clear error.
    with pytest.raises(UnknownNameError, match="ollama:llama3.2"):
        catalog.select()


def test_duplicate_variant_across_catalogs_names_both_files(tmp_path):
    extra = _user_catalog(tmp_path, GOOD.replace("name: a", "name: qwen3-0.6b-q8_0"))
    with pytest.raises(ConfigError, match="duplicate variant name") as info:
        load_catalogs(extra)
    assert str(extra) in str(info.value) and "models.yaml" in str(info.value)


def test_user_set_member_that_is_neither_a_variant_nor_a_spec_is_refused(tmp_path):
    extra = _user_catalog(tmp_path, "sets:\n  mine: [qwen3-0.6b-q8]\n")
    with pytest.raises(ConfigError, match="did you mean 'qwen3-0.6b-q8_0'"):
        load_catalogs(extra)


HUB_QUANT_SETS = [
    ("quant-compare-qwen3-0.6b", "qwen3-0.6b-bf16", "BF16"),
    ("quant-compare-gemma-3-270m", "gemma-3-270m-it-f16", "F16"),
    ("quant-compare-deepseek-r1-1.5b", "deepseek-r1-distill-qwen-1.5b-f16", "F16"),
]


@pytest.mark.parametrize("set_name, source, quant", HUB_QUANT_SETS)
def test_hub_quant_sets_derive_every_variant_from_the_16_bit_source(set_name, source, quant):
    from edgeeval.fidelity.orchestrate import pick_reference
    from edgeeval.quant.build import load_recipes

    catalog = load_catalog(REPO / "models.yaml")
    recipes = load_recipes(catalog)
    members = catalog.select([set_name])
    src = catalog.get(source)
    assert src.source.kind == "hub" and src.quant == quant
    assert src.source.filename.endswith(".gguf") and "/" in src.source.repo_id
    assert members[0] is src and pick_reference(members, None, catalog) is src
    derived = members[1:]
    assert len(derived) >= 4
    for v in derived:
        assert v.source.kind == "derived" and v.source.base == source, v.name
        assert v.source.recipe in recipes and v.model == src.model and v.family == src.family
        assert v.reasoning == src.reasoning and "not requantized" in v.notes
    assert {recipes[v.source.recipe].name for v in derived} >= {"q8_0", "q4_k_m", "mxfp4"}


def test_the_embedded_requantized_set_stays_and_says_so():
    catalog = load_catalog(REPO / "models.yaml")
    members = catalog.select(["quant-compare"])
    assert catalog.select(["quant-compare-requantized"]) == members
    base = catalog.get("qwen2.5-coder-0.5b-instruct-q4_k_m")
    assert base.source.kind == "pypi"
    for v in members:
        assert v.source.base == base.name and "from Q4_K_M" in v.notes, v.name
