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
# Multi30K text and the probing lists are not part of the repository: IKD_TEST_DATA names the folder that
# holds them (multi30k/tok/..., probing lists); by default ../shared/data beside the repository.
SHARED_DATA = Path(os.environ.get("IKD_TEST_DATA") or REPO.parent / "shared" / "data")

torch.set_num_threads(1)  # 2 OpenMP threads on 2 shared cores burn CPU without speed-up


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The Multi30K test data folder; the tests that need it are skipped (with a reason) where it is absent."""
    if not (SHARED_DATA / "multi30k" / "tok").is_dir():
        pytest.skip(
            f"needs Multi30K text in {SHARED_DATA}/multi30k/tok (a copy of multi30k/dataset's data/task1); "
            "set IKD_TEST_DATA=DIR to the folder holding multi30k/"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def probing_data(shared_data: Path) -> Path:
    """The test data folder with the probing word lists and positions (fairseq-mmt-probing/) in it as well."""
    if not (shared_data / "fairseq-mmt-probing").is_dir():
        pytest.skip(f"needs the probing lists in {shared_data}/fairseq-mmt-probing (set IKD_TEST_DATA=DIR)")
    return shared_data


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
