"""Validation at the end of an epoch: its loss is the training objective's weighted sum, written once."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from fixtures_train import TINY_MODEL, toy_recipe

from ikd.data.dataset import collate
from ikd.train.data import load_run_data
from ikd.train.distributed import DistInfo
from ikd.train.objective import build_training_model, objective
from ikd.train.validation import validation_loss

pytestmark = pytest.mark.filterwarnings("ignore:images are .* resizing on the device")

# one validation batch of 8 sentences, so that the split's means are the batch's own terms
ONE_BATCH = [*TINY_MODEL, "train.valid_max_sentences=8", "train.max_tokens=4096", "train.batch_multiple=1"]


def _model_and_data(recipe):
    data = load_run_data(recipe, "toy.yaml", report=lambda _m: None)
    torch.manual_seed(3)
    model = build_training_model(recipe, len(data.vocab), data.vocab.pad, load_teacher_weights=False)
    return model, data


def test_validation_loss_is_the_objective_on_the_valid_batches(toy_data) -> None:
    recipe = toy_recipe(toy_data, *ONE_BATCH, "kd.lambda_irm=2", "kd.lambda_iam=0.5")
    model, data = _model_and_data(recipe)
    valid = validation_loss(model, data, recipe, torch.device("cpu"), None, DistInfo())
    assert valid["loss"] == pytest.approx(valid["ce"] + 2 * valid["irm"] + 0.5 * valid["iam"], rel=1e-9)
    (indices,) = data.valid.batches(4096, 1, False, 1, 0)
    batch = collate(data.valid.data, indices, data.vocab.pad)
    model.eval()
    with torch.no_grad():
        terms = objective(model, batch, recipe, data.vocab.pad, None)
    assert valid["loss"] == pytest.approx(float(terms.loss), rel=1e-5)
    assert valid["ce"] == pytest.approx(float(terms.ce), rel=1e-5)


def test_a_term_without_weight_stays_out_of_the_validation_loss_as_in_training(toy_data, monkeypatch) -> None:
    """kd.lambda_irm 0 ("w/o IrM-KD"): an IrM term that overflows is no part of the loss, in validation as in
    the training step (0 * inf would make the validation loss NaN, and no epoch could be the best)."""
    recipe = toy_recipe(toy_data, *ONE_BATCH, "kd.lambda_irm=0", "kd.lambda_iam=0.5")
    model, data = _model_and_data(recipe)
    real = model.distiller.forward

    def overflowing(m, images):
        terms = real(m, images)
        return dataclasses.replace(terms, irm=terms.irm * float("inf"))

    monkeypatch.setattr(model.distiller, "forward", overflowing)
    valid = validation_loss(model, data, recipe, torch.device("cpu"), None, DistInfo())
    assert math.isinf(valid["irm"])
    assert valid["loss"] == pytest.approx(valid["ce"] + 0.5 * valid["iam"], rel=1e-9)
