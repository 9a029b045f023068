"""Shared fixtures. Data fixtures live in fixtures_data.py, trained-model fixtures in fixtures_train.py."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: no spin-waiting threads

from pathlib import Path  # noqa: E402

import pytest
import torch
from fixtures_data import *  # noqa: F403
from fixtures_train import *  # noqa: F403

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

torch.set_num_threads(1)  # 2 OpenMP threads on 2 shared cores burn CPU without speed-up


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the repository (Multi30K text, probing lists). Tests need it; CI has it."""
    assert (SHARED_DATA / "multi30k" / "tok").is_dir(), f"missing {SHARED_DATA}: tests read Multi30K from there"
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
