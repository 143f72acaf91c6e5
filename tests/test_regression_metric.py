"""Regression MAE / GM by shot region against hand-computed examples."""

from __future__ import annotations

import math

import pytest
import torch

from callbacks.regression import RegressionMAE


def train_targets():
    """Bin 10: 150 samples (many), bin 20: 50 (medium), bin 30: 5 (few), bin 55: none (few)."""
    return torch.cat([torch.full((150,), 10.3), torch.full((50,), 20.0), torch.full((5,), 29.6)])


def values(result):
    return {key: value.item() for key, value in result.items()}


def test_hand_computed_example():
    # (pred, target): errors many 1, 2 (bin 10); medium 0.5 (bin 20); few 4 (bin 30) and
    # 1 (bin 55, unseen in training)
    pred = torch.tensor([11.25, 12.0, 20.75, 34.25, 54.0])
    target = torch.tensor([10.25, 10.0, 20.25, 30.25, 55.0])
    metric = RegressionMAE()
    metric.set_train_targets(train_targets())
    metric.update(pred[:2], target[:2], torch.tensor([0, 1]))
    metric.update(pred[2:], target[2:], torch.tensor([2, 3, 4]))
    got = values(metric.compute())
    want = {
        "MAE": 8.5 / 5,
        "GM": 4 ** (1 / 5),  # (1 * 2 * 0.5 * 4 * 1) ** (1/5)
        "many/MAE": 1.5,
        "many/GM": 2**0.5,
        "medium/MAE": 0.5,
        "medium/GM": 0.5,
        "few/MAE": 2.5,
        "few/GM": 2.0,
    }
    assert got == pytest.approx(want, abs=1e-6)


def test_region_boundaries_bins_and_empty_region():
    """Counts 101 -> many, 100 and 20 -> medium, 19 -> few; with width 5 the bin of 7.4 and
    of 2.6 is the one centred on 5 ([2.5, 7.5)); no medium test sample gives NaN."""
    train = torch.cat([torch.full((101,), 0.0), torch.full((100,), 1.0), torch.full((20,), 2.0)])
    train = torch.cat([train, torch.full((19,), 3.0), torch.tensor([float("nan")] * 50)])
    metric = RegressionMAE(many_shot=100, few_shot=20)
    metric.set_train_targets(train)
    metric.update(torch.tensor([0.5, 4.0]), torch.tensor([0.0, 3.0]), torch.tensor([0, 1]))
    got = values(metric.compute())
    assert got["many/MAE"] == 0.5 and got["few/MAE"] == 1.0
    assert math.isnan(got["medium/MAE"]) and math.isnan(got["medium/GM"])
    metric.update(torch.tensor([2.0, 2.5]), torch.tensor([1.0, 2.0]), torch.tensor([2, 3]))
    got = values(metric.compute())  # target 1 (count 100) and 2 (count 20) are medium
    assert (got["many/MAE"], got["medium/MAE"], got["few/MAE"]) == (0.5, 0.75, 1.0)

    wide = RegressionMAE(bin_width=5.0, many_shot=2, few_shot=2)
    wide.set_train_targets(torch.tensor([2.6, 7.4, 4.0, 7.6]))  # bin 1: 3 samples, bin 2: 1
    wide.update(torch.tensor([6.0, 9.0]), torch.tensor([5.0, 12.0]), torch.tensor([0, 1]))
    got = values(wide.compute())
    assert got["many/MAE"] == 1.0 and got["few/MAE"] == 3.0 and math.isnan(got["medium/MAE"])


def test_grid_targets_land_in_their_own_bin_despite_float_rounding():
    """Scores in steps of 0.2 with width 0.2: in float64 0.6 / 0.2 = 2.9999999999999996 and
    0.4 / 0.2 = 2.0, in float32 0.6 / 0.2 = 3.0000001. Centred bins keep 0.4 and 0.6 apart
    (15 samples each: few-shot) and put a float32 0.6 with the float64 ones (25: medium);
    floor(y / width) would merge 0.4 and 0.6 and split 0.6 by precision."""
    metric = RegressionMAE(bin_width=0.2)
    train = torch.tensor([0.4] * 15 + [0.6] * 15, dtype=torch.float64)
    metric.set_train_targets(train)
    metric.update(torch.tensor([0.5]), torch.tensor([0.4], dtype=torch.float64), torch.tensor([0]))
    got = values(metric.compute())
    assert got["few/MAE"] == pytest.approx(0.1) and math.isnan(got["medium/MAE"])

    metric = RegressionMAE(bin_width=0.2)
    metric.set_train_targets(torch.full((25,), 0.6, dtype=torch.float64))
    metric.update(torch.tensor([1.0]), torch.tensor([0.6]), torch.tensor([0]))  # float32 target
    got = values(metric.compute())
    assert got["medium/MAE"] == pytest.approx(0.4) and math.isnan(got["few/MAE"])


def test_padding_duplicates_unknown_targets_and_two_ranks():
    pred = torch.tensor([11.25, 12.0, 20.75, 34.25, 54.0])
    target = torch.tensor([10.25, 10.0, 20.25, 30.25, 55.0])
    index = torch.arange(5)
    single = RegressionMAE()
    single.set_train_targets(train_targets())
    single.update(pred, target, index)
    ranks = []
    # 6 rows (row 0 padded in again) strided over 2 ranks, plus an unknown (NaN) target
    padded = [torch.cat([t, t[:1]]) for t in (pred, target, index)]
    for rank in range(2):
        metric = RegressionMAE()
        metric.set_train_targets(train_targets())
        metric.update(*(t[rank::2] for t in padded))
        metric.update(torch.tensor([0.0]), torch.tensor([float("nan")]), torch.tensor([9]))
        ranks.append(metric)
    ranks[0].merge_state(ranks[1])
    assert values(ranks[0].compute()) == pytest.approx(values(single.compute()))


def test_geometric_mean_is_zero_with_an_exact_prediction_and_errors_need_train_targets():
    metric = RegressionMAE()
    metric.set_train_targets(train_targets())
    metric.update(torch.tensor([10.0, 12.0]), torch.tensor([10.0, 10.0]), torch.tensor([0, 1]))
    got = values(metric.compute())
    assert got["GM"] == 0.0 and got["MAE"] == 1.0
    with pytest.raises(RuntimeError):
        RegressionMAE().compute()
