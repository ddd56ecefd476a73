"""The environment meets pyproject's dependency floors, which exclude releases with advisories."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
REQUIREMENTS = [Requirement(line) for line in PROJECT["dependencies"]]
EXTRAS = [
    Requirement(line)
    for extra, lines in PROJECT["optional-dependencies"].items()
    for line in lines
    if not line.startswith("xmodal")
]


def floor(name: str) -> Version:
    (requirement,) = [r for r in REQUIREMENTS if r.name == name]
    (spec,) = [s for s in requirement.specifier if s.operator == ">="]
    return Version(spec.version)


@pytest.mark.parametrize("requirement", REQUIREMENTS, ids=lambda r: r.name)
def test_every_dependency_is_installed_at_or_above_its_floor(requirement: Requirement) -> None:
    installed = metadata.version(requirement.name)
    assert requirement.specifier.contains(installed, prereleases=True), (
        f"{requirement.name} {installed} does not meet {requirement}; "
        "reinstall: pip install -e '.[dev]'"
    )


@pytest.mark.parametrize("requirement", EXTRAS, ids=lambda r: r.name)
def test_the_dev_extras_are_installed_at_or_above_their_floors(requirement: Requirement) -> None:
    """`make test` installs xmodal[dev], which pulls in every extra."""
    installed = metadata.version(requirement.name)
    assert requirement.specifier.contains(installed, prereleases=True), (requirement, installed)


def test_the_floors_exclude_the_releases_named_by_the_advisories() -> None:
    """The last affected release of each advisory named in pyproject.toml is refused."""
    last_affected = {
        "torch": "2.12.1",  # GHSA-rrmf-rvhw-rf47
        "transformers": "5.4.0",  # GHSA-fgcw-684q-jj6r
        "pillow": "12.2.0",  # PYSEC-2026-2253..2257, 3451..3453
        "gradio": "6.15.2",  # GHSA-j36p-7w88-g82j
        "python-multipart": "0.0.30",  # GHSA-v9pg-7xvm-68hf
    }
    for name, version in last_affected.items():
        assert Version(version) < floor(name), (name, version)


def test_the_install_scripts_cpu_torch_meets_the_floor() -> None:
    script = (ROOT / "scripts" / "install.sh").read_text()
    pin = re.search(r'^torch_cpu_pin="([^"]+)"$', script, re.MULTILINE)
    stated = re.search(r'^torch_floor="([^"]+)"$', script, re.MULTILINE)
    assert pin and stated, "scripts/install.sh names torch_cpu_pin and torch_floor"
    assert Version(pin.group(1)) >= floor("torch")
    assert Version(stated.group(1)) == floor("torch")
