"""pyproject.toml and environment.yml must pin the same packages to the same exact versions.

Why: the tiny profile promises the same numbers on every machine, which holds only while pip users
(`make venv`) and conda/mamba users (`environment.yml`) install identical versions. The last test
also checks the running interpreter against the pins, so a hand-upgraded venv is caught.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = REPO_ROOT / "pyproject.toml"
ENVIRONMENT = REPO_ROOT / "environment.yml"

_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*==\s*([^\s;,]+)\s*$")


def normalise(name: str) -> str:
    """PEP 503 name normalisation, so that `open_clip_torch` and `open-clip-torch` compare equal."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_pins(requirements: list[str], source: str) -> dict[str, str]:
    """Map normalised name -> version; every requirement must be an exact `name==version` pin."""
    pins: dict[str, str] = {}
    for req in requirements:
        match = _PIN.match(req)
        if match is None:
            raise AssertionError(f"{source}: {req!r} is not an exact 'name==version' pin")
        name = normalise(match.group(1))
        if name in pins:
            raise AssertionError(f"{source}: {name} is pinned twice")
        pins[name] = match.group(3)
    return pins


def pyproject_pins() -> tuple[dict[str, str], dict[str, str]]:
    """(runtime pins, dev-extra pins) from pyproject.toml."""
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    runtime = parse_pins(project["dependencies"], f"{PYPROJECT.name} [project.dependencies]")
    dev = parse_pins(project["optional-dependencies"]["dev"], f"{PYPROJECT.name} [dev]")
    return runtime, dev


def _load_environment_fallback(text: str) -> dict:
    """A tiny parser for the one shape environment.yml has (used only when PyYAML is missing):
    top-level keys, a `dependencies` list of strings, and one nested `- pip:` list."""
    env: dict = {}
    key: str | None = None
    pip_list: list[str] | None = None
    pip_indent = 0
    for raw in text.splitlines():
        line = "" if raw.lstrip().startswith("#") else raw.split(" #", 1)[0].rstrip()
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        item = line.strip()
        if indent == 0:
            key, _, value = item.partition(":")
            env[key] = value.strip() or []
            pip_list = None
        elif item == "- pip:" and key == "dependencies":
            pip_list, pip_indent = [], indent
            env[key].append({"pip": pip_list})
        elif item.startswith("- ") and pip_list is not None and indent > pip_indent:
            pip_list.append(item[2:].strip())
        elif item.startswith("- ") and key is not None:
            env[key].append(item[2:].strip())
    return env


def load_environment() -> dict:
    text = ENVIRONMENT.read_text(encoding="utf-8")
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is pinned in the dev extra
        return _load_environment_fallback(text)
    return yaml.safe_load(text)


def environment_parts() -> tuple[list[str], list[str]]:
    """(conda dependency strings, pip requirement strings) from environment.yml."""
    conda: list[str] = []
    pip: list[str] = []
    for dep in load_environment()["dependencies"]:
        if isinstance(dep, dict):
            assert set(dep) == {"pip"}, f"{ENVIRONMENT.name}: unexpected nested entry {dep!r}"
            pip.extend(dep["pip"])
        else:
            conda.append(str(dep))
    return conda, pip


def test_all_pyproject_dependencies_are_exact_pins() -> None:
    runtime, dev = pyproject_pins()
    assert runtime["torch"] == "2.14.1", "torch must stay at 2.14.1 (see README: install notes)"
    assert runtime["torchvision"] == "0.29.1"
    assert not set(runtime) & set(dev), "a package is pinned both as runtime and dev dependency"


def test_environment_yml_matches_pyproject() -> None:
    runtime, dev = pyproject_pins()
    _, pip = environment_parts()
    editable = [req for req in pip if req.startswith("-e")]
    assert editable == ["-e .[dev]"], f"{ENVIRONMENT.name} must install the package itself: {editable}"
    env_pins = parse_pins([req for req in pip if not req.startswith("-")], f"{ENVIRONMENT.name} pip")
    expected = {**runtime, **dev}
    missing = {k: v for k, v in expected.items() if k not in env_pins}
    extra = {k: v for k, v in env_pins.items() if k not in expected}
    differ = {
        k: (expected[k], env_pins[k]) for k in expected.keys() & env_pins.keys() if expected[k] != env_pins[k]
    }
    assert not missing and not extra and not differ, (
        f"{ENVIRONMENT.name} and {PYPROJECT.name} disagree: missing from environment.yml {missing}, "
        f"only in environment.yml {extra}, different versions (pyproject, environment.yml) {differ}"
    )


def test_environment_yml_python_matches_requires_python() -> None:
    conda, _ = environment_parts()
    pythons = [dep for dep in conda if dep.startswith("python")]
    assert pythons == ["python=3.11"], f"{ENVIRONMENT.name}: expected python=3.11, found {pythons}"
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    assert project["requires-python"] == ">=3.11"


def test_fallback_parser_agrees_with_yaml() -> None:
    yaml = pytest.importorskip("yaml")
    text = ENVIRONMENT.read_text(encoding="utf-8")
    assert _load_environment_fallback(text)["dependencies"] == yaml.safe_load(text)["dependencies"]


def test_running_environment_matches_pins() -> None:
    """The interpreter running the tests has exactly the pinned runtime versions installed."""
    runtime, dev = pyproject_pins()
    wrong: dict[str, tuple[str, str]] = {}
    for name, version in runtime.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "not installed"
        # local version labels (e.g. torch 2.14.1+cpu) are the same release
        if installed.split("+", 1)[0] != version:
            wrong[name] = (version, installed)
    for name, version in dev.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # dev tools are optional at run time
        if installed != version:
            wrong[name] = (version, installed)
    assert not wrong, f"installed versions differ from pyproject.toml pins (pinned, installed): {wrong}"
