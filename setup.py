"""Ships the built-in catalog and task files inside the wheel.

models.yaml and benchmarks/tasks/ (task files, their data, bench profiles) stay in the repository
(that is where contributors edit them); the benchmark scripts beside them in benchmarks/ are not
shipped. Building a wheel (`pip install .`, `pip wheel .`) copies them into `edgeeval/_data/` of
the build, where `edgeeval.settings.package_root()` finds them in an installed package. An
editable install (`pip install -e .`) copies nothing: the package then runs from the checkout
and finds the files at the top of it. Everything else is declared in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
#: Package data taken from the repository top level: (source, patterns).
DATA = [
    (".", ["models.yaml"]),
    ("benchmarks/tasks", ["*.yaml", "data/*.jsonl", "profiles/*.yaml"]),
]


class BuildPyWithData(build_py):
    """build_py that also copies the catalog and task files into edgeeval/_data."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install runs from the checkout, which has the files
        target = Path(self.build_lib) / "edgeeval" / "_data"
        for folder, patterns in DATA:
            for pattern in patterns:
                for source in sorted((ROOT / folder).glob(pattern)):
                    dest = target / source.relative_to(ROOT)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, dest)


setup(cmdclass={"build_py": BuildPyWithData})
