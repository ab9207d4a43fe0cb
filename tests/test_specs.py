"""Model specs: a .gguf path, hf:, ollama: and lmstudio: name a model wherever a catalog name
is accepted; the variant's facts come from the file. Ollama and LM Studio stores are fakes
laid out as those tools lay them out; the HF cache is filled by the real huggingface_hub from
the fake Hub (tests/fakehub.py)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from edgeeval import settings
from edgeeval.catalog.models import Catalog, Source, Variant, load_catalog
from edgeeval.cli.main import main
from edgeeval.errors import EdgeevalError, FetchError, InvalidModelFileError
from edgeeval.fetch import sources, specs
from tests import fakehub
from tests.conftest import REPO
from tests.fakehub import FakeHub
from tests.faults.inputs_support import write_gguf

fake_hub = fakehub.fake_hub

SMOL_SHA = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _place(src: Path, dst: Path) -> Path:
    """`src` at `dst` without copying 100 MB when a hard link works."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    return dst


def fake_ollama(model: Path, name: str = "smollm2", tag: str = "135m") -> Path:
    """An Ollama store (at OLLAMA_MODELS) holding `model` as name:tag, laid out as Ollama does."""
    root = settings.ollama_models_dir()
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    _place(model, root / "blobs" / f"sha256-{digest}")
    manifest = root / "manifests" / "registry.ollama.ai" / "library" / name / tag
    manifest.parent.mkdir(parents=True, exist_ok=True)
    layers = [
        {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}"},
        {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "0" * 64},
    ]
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": layers}))
    return root / "blobs" / f"sha256-{digest}"


def fake_lmstudio(model: Path, rel: str = f"bartowski/SmolLM2-GGUF/{SMOL_FILE}") -> Path:
    return _place(model, settings.lmstudio_models_dirs()[0] / rel)


def _resolve(text: str) -> specs.Variant:
    catalog = load_catalog(REPO / "models.yaml")
    _, variants = specs.select(catalog, [text])
    return variants[0]


@pytest.mark.parametrize("kind", ["path", "hf", "ollama", "lmstudio"])
def test_the_embedded_model_is_reachable_by_every_kind_of_spec(
    kind: str, smollm_path: Path, fake_hub: FakeHub, tmp_path: Path
) -> None:
    if kind == "path":
        spec = str(_place(smollm_path, tmp_path / "elsewhere" / SMOL_FILE))
    elif kind == "hf":
        fake_hub.add_file("HuggingFaceTB/SmolLM2-GGUF", SMOL_FILE, smollm_path.read_bytes())
        spec = "hf:HuggingFaceTB/SmolLM2-GGUF:q4_1"  # the tag matches case-insensitively
    elif kind == "ollama":
        fake_ollama(smollm_path)
        spec = "ollama:smollm2:135m"
    else:
        fake_lmstudio(smollm_path)
        spec = "lmstudio:bartowski/SmolLM2-GGUF"

    variant = _resolve(spec)
    local = sources.fetch(variant)

    assert (variant.quant, variant.params) == ("Q4_1", 134515008)
    assert variant.kind == "instruct" and variant.chat_template  # ChatML is in the file
    assert variant.spec == spec
    if kind in ("path", "lmstudio"):  # a local file with the catalog entry's sha256 IS it
        assert variant.name == "smollm2-135m-instruct-q4_1" and variant.family == "smollm"
        assert variant.source.kind == "local" and variant.source.path == str(local.path)
    else:  # Hub and Ollama specs: a name of their own, from the header
        assert variant.name != "smollm2-135m-instruct-q4_1" and variant.name.endswith("q4_1")
        assert variant.family == "llama" and variant.license == "apache-2.0"
    assert local.sha256 == SMOL_SHA and local.size_bytes == smollm_path.stat().st_size


def test_second_hf_use_makes_no_content_request(fake_hub: FakeHub, tmp_path: Path) -> None:
    model = write_gguf(tmp_path / "m.gguf", {"general.file_type": ("add_uint32", 7)})
    fake_hub.add_file("org/tiny-GGUF", "tiny-Q8_0.gguf", model.read_bytes())
    fake_hub.add_file("org/tiny-GGUF", "tiny-Q4_K_M.gguf", b"GGUF not this one")

    first = _resolve("hf:org/tiny-GGUF:Q8_0")
    assert len(fake_hub.content_requests()) == 1  # the file itself, once
    fake_hub.requests.clear()
    second = _resolve("hf:org/tiny-GGUF:Q8_0")
    sources.fetch(second)

    assert fake_hub.content_requests() == []
    assert second == first and second.quant == "Q8_0"
    assert Path(str(sources.fetch(second).path)).is_relative_to(settings.hf_hub_cache())


def test_hf_tag_matching_two_files_names_both(fake_hub: FakeHub) -> None:
    fake_hub.add_file("org/r", "model-Q4_K_M.gguf", b"a")
    fake_hub.add_file("org/r", "model-it-Q4_K_M.gguf", b"b")
    fake_hub.add_file("org/r", "model-Q8_0.gguf", b"c")

    with pytest.raises(FetchError) as info:
        _resolve("hf:org/r:Q4_K_M")

    assert "model-Q4_K_M.gguf" in str(info.value) and "model-it-Q4_K_M.gguf" in str(info.value)
    assert fake_hub.content_requests() == []


def test_hf_tag_matching_nothing_lists_the_repos_tags(fake_hub: FakeHub) -> None:
    fake_hub.add_file("org/r", "model-Q4_K_M.gguf", b"a")
    fake_hub.add_file("org/r", "model-Q8_0.gguf", b"c")
    fake_hub.add_file("org/r", "README.md", b"readme", lfs=False)

    with pytest.raises(FetchError, match="Q4_K_M, Q8_0"):
        _resolve("hf:org/r:Q6_K")


def test_hf_file_spec_with_revision_and_split_parts(fake_hub: FakeHub, tmp_path: Path) -> None:
    model = write_gguf(tmp_path / "m.gguf", {"general.name": ("add_string", "Tiny Split")})
    first = "sub/tiny-00001-of-00002.gguf"
    fake_hub.add_file("org/s", first, model.read_bytes(), revision="v2")
    fake_hub.add_file("org/s", "sub/tiny-00002-of-00002.gguf", model.read_bytes(), revision="v2")

    variant = _resolve(f"hf:org/s/{first}@v2")

    assert variant.source.kind == "hub" and variant.source.filename == first
    assert len(variant.source.revision or "") == 40  # pinned to the commit
    path = sources.fetch(variant).path
    assert (path.parent / "tiny-00002-of-00002.gguf").is_file()  # both parts are there
    assert variant.name == "tiny-split-f32" and variant.params == 2 * (8 * 64 + 4 * 32)


def test_any_architecture_is_accepted_with_facts_from_the_file(tmp_path: Path) -> None:
    model = write_gguf(
        tmp_path / "phi.gguf",
        {"general.file_type": ("add_uint32", 15), "general.name": ("add_string", "Phi 4 Mini")},
        arch="phi3",
    )

    variant = _resolve(str(model))

    assert (variant.family, variant.quant, variant.kind) == ("phi3", "Q4_K_M", "base")
    # named from the file (plus the quant its name lacks); the header's name kept as `model`
    assert variant.name == "phi-q4_k_m" and variant.model == "Phi 4 Mini"


def _catalog_with(model: Path, name: str = "tiny-entry") -> Catalog:
    entry = Variant(
        name=name,
        family="tiny",
        model="Tiny Entry",
        quant="F32",
        source=Source(kind="hub", repo_id="org/tiny", filename="tiny.gguf"),
        license="mit",
        kind="base",
        size_bytes=model.stat().st_size,
        sha256=hashlib.sha256(model.read_bytes()).hexdigest(),
    )
    return load_catalog(REPO / "models.yaml").with_variants([entry])


def test_a_file_with_a_catalog_entrys_sha256_takes_its_name(tmp_path: Path) -> None:
    header = {"general.name": ("add_string", "run-7-ep2-mix")}
    model = write_gguf(_dir(tmp_path / "downloads") / "my-copy.gguf", header)
    catalog = _catalog_with(model)

    merged, [variant] = specs.select(catalog, [str(model)])

    assert (variant.name, variant.family, variant.model) == ("tiny-entry", "tiny", "Tiny Entry")
    assert variant.source == Source(kind="local", path=str(model.resolve()))
    assert variant.spec == str(model) and merged.get("tiny-entry") == variant
    assert sources.fetch(variant).path == model.resolve()  # read where it lies, not downloaded


def test_a_file_of_the_same_size_but_other_bytes_is_named_from_its_file_name(
    tmp_path: Path,
) -> None:
    header = {"general.name": ("add_string", "run-7-ep2-mix")}
    model = write_gguf(tmp_path / "My Model.gguf", header)
    catalog = _catalog_with(model)
    blob = bytearray(model.read_bytes())
    blob[-1] ^= 0xFF  # same size, another sha256
    model.write_bytes(bytes(blob))

    _, [variant] = specs.select(catalog, [str(model)])

    assert variant.name == "my-model-f32" and variant.model == "run-7-ep2-mix"
    assert variant.sha256 == hashlib.sha256(bytes(blob)).hexdigest()  # hashed: kept


def test_a_file_no_entry_has_the_size_of_is_never_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = write_gguf(tmp_path / "other-Q8_0.gguf", {"general.file_type": ("add_uint32", 7)})

    def refuse(path: object) -> str:
        raise AssertionError(f"{path} was hashed")

    monkeypatch.setattr(specs, "sha256_file", refuse)
    _, [variant] = specs.select(load_catalog(REPO / "models.yaml"), [str(model)])

    assert variant.name == "other-q8_0" and variant.sha256 is None


def test_a_later_split_part_points_at_the_first(tmp_path: Path) -> None:
    part = write_gguf(tmp_path / "m-00002-of-00003.gguf")
    with pytest.raises(FetchError, match="m-00001-of-00003.gguf"):
        _resolve(str(part))


def test_a_path_that_is_not_a_gguf_is_refused_before_llama_cpp(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(InvalidModelFileError, match="GGUF"):
        _resolve(str(bad))


def test_missing_ollama_model_says_how_to_pull(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="ollama pull llama3.2:latest"):
        _resolve("ollama:llama3.2")


def test_lmstudio_folder_with_two_models_lists_them(tmp_path: Path) -> None:
    for name in ("a-Q4_K_M.gguf", "a-Q8_0.gguf"):
        write_gguf(_dir(settings.lmstudio_models_dirs()[0] / "pub" / "a") / name)
    with pytest.raises(FetchError, match="a-Q4_K_M.gguf.*a-Q8_0.gguf"):
        _resolve("lmstudio:pub/a")
    assert _resolve("lmstudio:pub/a/a-Q8_0.gguf").spec == "lmstudio:pub/a/a-Q8_0.gguf"


def _dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_sets_in_a_user_catalog_can_name_specs(tmp_path: Path, capsys) -> None:
    model = write_gguf(tmp_path / "Mine-Q8_0.gguf", {"general.file_type": ("add_uint32", 7)})
    extra = tmp_path / "user.yaml"
    extra.write_text(f'sets:\n  laptop: ["{model}", smollm2-135m-instruct-q4_1]\n')

    assert main(["--catalog", str(extra), "models", "laptop", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["variants"]

    assert [r["name"] for r in rows] == ["mine-q8_0", "smollm2-135m-instruct-q4_1"]
    assert rows[0]["spec"] == str(model) and rows[0]["local"] == "yes"


def test_cli_names_an_unusable_spec_without_a_traceback(tmp_path: Path, capsys) -> None:
    assert main(["fetch", str(tmp_path / "nope.gguf")]) == EdgeevalError.exit_code
    err = capsys.readouterr().err
    assert "no model file at" in err and "hf:OWNER/REPO:QUANT" in err and "Traceback" not in err


def test_discover_lists_the_models_of_every_store(
    fake_hub: FakeHub, tmp_path: Path, capsys
) -> None:
    from huggingface_hub import hf_hub_download

    q8 = write_gguf(tmp_path / "q8.gguf", {"general.file_type": ("add_uint32", 7)})
    fake_ollama(q8, "tiny", "q8")
    fake_lmstudio(q8, "pub/tiny/tiny-Q8_0.gguf")
    fake_hub.add_file("org/tiny", "tiny-Q8_0.gguf", q8.read_bytes())
    hf_hub_download(
        "org/tiny", "tiny-Q8_0.gguf", cache_dir=settings.hf_hub_cache(), endpoint=fake_hub.url
    )
    scanned = _dir(tmp_path / "scan")
    write_gguf(scanned / "phi.gguf", arch="phi3")
    (scanned / "broken.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    write_gguf(scanned / "mmproj-x.gguf")  # a projector: not listed

    assert main(["models", "--discover", "--scan", str(scanned), "--json"]) == 0
    found = {d["spec"].split("@")[0]: d for d in json.loads(capsys.readouterr().out)}

    assert set(found) == {
        "hf:org/tiny/tiny-Q8_0.gguf",
        "ollama:tiny:q8",
        "lmstudio:pub/tiny/tiny-Q8_0.gguf",
        str(scanned / "phi.gguf"),
        str(scanned / "broken.gguf"),
    }
    assert found["ollama:tiny:q8"]["quant"] == "Q8_0" and found["ollama:tiny:q8"]["runnable"]
    assert found[str(scanned / "phi.gguf")]["architecture"] == "phi3"
    broken = found[str(scanned / "broken.gguf")]
    assert not broken["runnable"] and "not a valid GGUF" in broken["reason"]
    # Every listed spec resolves to a variant.
    assert _resolve("ollama:tiny:q8").quant == "Q8_0"


def test_discover_without_stores_says_where_it_looked(capsys) -> None:
    assert main(["models", "--discover"]) == 0
    out = capsys.readouterr().out
    assert "no GGUF files found" in out and str(settings.ollama_models_dir()) in out
