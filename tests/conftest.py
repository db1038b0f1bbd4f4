"""Shared test set-up: offline hub, deterministic CPU, and the real annotation files when present."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# CI and developers have ../shared beside the checkout; a user's clone does not.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Directory of the real ActivityNet Captions / YouCook2 annotation files, or skip."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data (real annotation files) is not beside this checkout")
    return SHARED_DATA
