"""Shared pytest fixtures for the cirlib test suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from cirlib.config import ANNOTATIONS_DIR, REPO_ROOT


@pytest.fixture(scope="session")
def annotations_root() -> Path:
    """Root of the real CIRR / CIRCO / FashionIQ annotation files (upstream layout, no images).

    The committed copy under ``data/annotations`` comes first; a checkout without it falls back
    to the shared copy beside the repository (``../shared/cir-annotations``), so that tests of
    the loaders run against real files wherever they are, and skip with a reason otherwise.
    """
    for candidate in (ANNOTATIONS_DIR, REPO_ROOT.parent / "shared" / "cir-annotations"):
        if candidate.is_dir() and any(candidate.iterdir()):
            return candidate
    pytest.skip(
        f"real annotations not found: neither {ANNOTATIONS_DIR} nor "
        f"{REPO_ROOT.parent / 'shared' / 'cir-annotations'} exists"
    )
