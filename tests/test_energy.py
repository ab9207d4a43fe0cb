"""Energy counters (engine/energy.py) over faked powercap trees and a faked NVML module, and
their place around the timed region of a speed test (run/speed.py)."""

from __future__ import annotations

import dataclasses
import json
import random
import types
from pathlib import Path

import pytest

from edgeeval import records as rec
from edgeeval.engine import energy
from edgeeval.run.speed import SpeedTest, run_speed_test
from tests import builders


def zone(root: Path, name: str, label: str, uj: int, max_uj: int = 262_143_328_850) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "name").write_text(label + "\n")
    (d / "energy_uj").write_text(f"{uj}\n")
    (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return d


def set_uj(d: Path, uj: int) -> None:
    (d / "energy_uj").write_text(f"{uj}\n")


@pytest.fixture()
def powercap(tmp_path: Path) -> dict[str, Path]:
    """Two packages, one with a DRAM and a core sub-zone (core is inside the package)."""
    root = tmp_path / "powercap"
    return {
        "root": root,
        "pkg0": zone(root, "intel-rapl:0", "package-0", 1_000_000),
        "dram": zone(root, "intel-rapl:0/intel-rapl:0:1", "dram", 500_000),
        "core": zone(root, "intel-rapl:0/intel-rapl:0:0", "core", 7_000),
        "pkg1": zone(root, "intel-rapl:1", "package-1", 2_000_000, max_uj=3_000_000),
    }


def test_rapl_reads_packages_and_dram_not_core(powercap):
    meter = energy.find_meter(platform="linux", powercap_root=powercap["root"], use_nvml=False)
    assert isinstance(meter, energy.RaplMeter)
    assert meter.domains == ("package-0", "package-0/dram", "package-1")
    mark = meter.start()
    set_uj(powercap["pkg0"], 3_500_000)  # +2.5 J
    set_uj(powercap["dram"], 750_000)  # +0.25 J
    set_uj(powercap["core"], 9_999_999)  # not counted: inside the package
    set_uj(powercap["pkg1"], 2_100_000)  # +0.1 J
    got = meter.stop(mark)
    assert got is not None and got.method == "rapl"
    assert got.joules == pytest.approx(2.85)


def test_rapl_counter_wrapping_during_the_region(powercap):
    meter = energy.find_meter(platform="linux", powercap_root=powercap["root"], use_nvml=False)
    set_uj(powercap["pkg1"], 2_900_000)  # 0.1 J before its wrap at 3,000,000 uJ
    mark = meter.start()
    set_uj(powercap["pkg1"], 400_000)  # wrapped: 0.1 J + 0.4 J
    got = meter.stop(mark)
    assert got is not None and got.joules == pytest.approx(0.5)


def test_wrapped_delta_is_never_negative():
    assert energy.wrapped_delta(10, 5, 100) == 95
    assert energy.wrapped_delta(5, 10, 100) == 5


def test_no_powercap_says_not_available_and_why(tmp_path):
    meter = energy.find_meter(platform="linux", powercap_root=tmp_path / "none", use_nvml=False)
    assert isinstance(meter, energy.Unavailable)
    assert meter.reason.startswith("not available here")
    assert "does not exist" in meter.reason
    assert meter.stop(meter.start()) is None  # never 0 J


def test_root_only_rapl_names_the_file_and_the_fix(powercap, monkeypatch):
    real = energy._read_int

    def denied(path: Path) -> int:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(energy, "_read_int", denied)
    meter = energy.find_meter(platform="linux", powercap_root=powercap["root"], use_nvml=False)
    assert isinstance(meter, energy.Unavailable)
    assert "only root may read" in meter.reason and "intel-rapl:0/energy_uj" in meter.reason


def fake_nvml(counters: list[int], *, supported: bool = True, start_fails: bool = False):
    """A pynvml stand-in: GPU i's total energy (mJ) is counters[i], changed by the test."""

    class NVMLError(Exception):
        pass

    def total(handle):
        if not supported:
            raise NVMLError("Not Supported")
        return counters[handle]

    def init():
        if start_fails:
            raise NVMLError("Driver Not Loaded")

    return types.SimpleNamespace(
        nvmlInit=init,
        nvmlDeviceGetCount=lambda: len(counters),
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetTotalEnergyConsumption=total,
        nvmlDeviceGetName=lambda h: b"NVIDIA H100 80GB HBM3",
    )


def test_nvml_sums_every_gpu_in_millijoules():
    counters = [10_000, 50_000]
    meter = energy.find_meter(
        platform="linux", powercap_root=Path("/nonexistent"), nvml=fake_nvml(counters)
    )
    assert isinstance(meter, energy.NvmlMeter)
    assert meter.domains == ("gpu0: NVIDIA H100 80GB HBM3", "gpu1: NVIDIA H100 80GB HBM3")
    mark = meter.start()
    counters[0] += 1_500
    counters[1] += 250
    got = meter.stop(mark)
    assert got is not None and got.joules == pytest.approx(1.75) and got.method == "nvml"


@pytest.mark.parametrize(
    ("module", "why"),
    [
        (fake_nvml([1], supported=False), "none with a total energy counter"),
        (fake_nvml([1], start_fails=True), "NVML did not start"),
    ],
)
def test_nvml_without_a_counter_is_not_available(module, why):
    meter = energy.find_meter(platform="linux", powercap_root=Path("/nonexistent"), nvml=module)
    assert isinstance(meter, energy.Unavailable) and why in meter.reason


def test_rapl_and_nvml_together_add_up(powercap):
    counters = [0]
    meter = energy.find_meter(
        platform="linux", powercap_root=powercap["root"], nvml=fake_nvml(counters)
    )
    assert isinstance(meter, energy.Combined) and meter.method == "rapl+nvml"
    mark = meter.start()
    set_uj(powercap["pkg0"], 2_000_000)
    counters[0] = 3_000
    got = meter.stop(mark)
    assert got is not None and got.joules == pytest.approx(4.0)
    assert "gpu0: NVIDIA H100 80GB HBM3" in got.domains and "package-0" in got.domains


def test_macos_without_root_says_to_use_sudo():
    meter = energy.find_meter(platform="darwin", use_nvml=False, is_root=False)
    assert isinstance(meter, energy.Unavailable) and "needs root" in meter.reason


def test_powermetrics_integrates_mean_power_over_the_region():
    class Proc:
        def terminate(self):
            pass

        def communicate(self, timeout=None):
            text = "".join(f"Combined Power (CPU + GPU + ANE): {mw} mW\n" for mw in (4000, 6000))
            return text, ""

    times = iter([10.0, 12.0])
    meter = energy.PowermetricsMeter(popen=lambda *a, **k: Proc(), clock=lambda: next(times))
    got = meter.stop(meter.start())
    assert got is not None and got.joules == pytest.approx(10.0)  # 5 W for 2 s
    assert energy.powermetrics_watts("CPU Power: 1000 mW\nGPU Power: 500 mW\n") == 1.5
    assert energy.powermetrics_watts("no samples") is None


class CountingBackend:
    """Just enough Backend for run_speed_test; each decode burns 1 uJ per token in a fake RAPL
    package, so only the timed decodes show in the reading."""

    def __init__(self, energy_file: Path) -> None:
        self.energy_file = energy_file

    def _burn(self, n: int) -> None:
        now = int(self.energy_file.read_text())
        self.energy_file.write_text(str(now + n))

    def describe(self):
        return types.SimpleNamespace(model_type="fake", type_k="f16", type_v="f16")

    def clear(self) -> None:
        pass

    def bench_prompt(self, n: int, rng: random.Random, first: bool = True) -> None:
        self._burn(n)

    def bench_gen(self, n: int, rng: random.Random) -> None:
        self._burn(n)


def test_speed_test_reads_energy_around_the_timed_region_only(powercap):
    meter = energy.find_meter(platform="linux", powercap_root=powercap["root"], use_nvml=False)
    backend = CountingBackend(powercap["pkg0"] / "energy_uj")
    test = SpeedTest(n_prompt=0, n_gen=16, n_depth=1000)  # the 1000-token refill is untimed
    result = run_speed_test(backend, test, repetitions=3, energy=meter)  # type: ignore[arg-type]
    assert result.energy_j == pytest.approx(3 * 16 / 1e6)
    assert result.energy_method == "rapl" and result.energy_domains.startswith("package-0")
    assert result.tokens_timed == 48
    back = rec.from_dict(rec.SpeedResult, json.loads(rec.to_json(result)), strict=True)
    assert back == result  # the fields round-trip through the store's JSON


def test_speed_test_without_a_counter_stores_the_reason_not_zero(tmp_path):
    meter = energy.find_meter(platform="linux", powercap_root=tmp_path / "none", use_nvml=False)
    backend = CountingBackend(tmp_path / "unused")
    (tmp_path / "unused").write_text("0")
    result = run_speed_test(backend, SpeedTest(8, 0), repetitions=1, energy=meter)  # type: ignore[arg-type]
    assert result.energy_j is None and result.energy_method.startswith("not available here")


def test_this_machine_is_described_either_way():
    """Whatever this host exposes, the default meter is a real reader or says why not."""
    meter = energy.default_meter()
    if isinstance(meter, energy.Unavailable):
        assert meter.reason.startswith("not available here (")
    else:
        assert meter.domains


# --- the report's Energy section ----------------------------------------------------------


def _with_energy(s: rec.SpeedResult, joules: float | None, method: str) -> rec.SpeedResult:
    return dataclasses.replace(s, energy_j=joules, energy_method=method, energy_domains="package-0")


def test_report_gives_joules_per_token_and_tokens_per_joule():
    from edgeeval.report.energy import energy_markdown, energy_rows

    pp = _with_energy(builders.speed("pp128", [100.0, 100.0]), 2.56, "rapl")  # 256 tokens
    tg = _with_energy(builders.speed("tg32", [10.0, 10.0]), 6.4, "rapl")  # 64 tokens
    record = builders.record("m-q4", peak_gb=1, acc=0.5, speeds=[pp, tg])
    (row,) = energy_rows([record])
    assert row["j_per_prompt_token"] == pytest.approx(0.01)
    assert row["j_per_gen_token"] == pytest.approx(0.1)
    assert row["gen_tokens_per_j"] == pytest.approx(10.0)
    text = "\n".join(energy_markdown([record]))
    assert "| m-q4 | 0.01 | 0.1 | 100.0 | 10.0 | rapl | package-0 |" in text


def test_report_says_not_available_never_zero():
    from edgeeval.report.energy import energy_markdown

    why = "not available here (RAPL: /sys/class/powercap does not exist)"
    tg = _with_energy(builders.speed("tg32", [10.0]), None, why)
    text = "\n".join(energy_markdown([builders.record("m", peak_gb=1, acc=0.5, speeds=[tg])]))
    assert why in text and "0.0" not in text and "| m |" not in text


def test_report_of_a_run_from_before_energy_has_no_section():
    from edgeeval.report.energy import energy_markdown
    from edgeeval.report.sections import memory_markdown

    old = builders.record("m", peak_gb=1, acc=0.5)
    assert energy_markdown([old]) == []
    assert "## Energy" not in "\n".join(memory_markdown([old]))
