"""`cacmi demo`'s own logic: the trivial baseline, the training budget, the target report (the whole demo runs
in tests/test_model_card.py, on the quick world)."""

import pytest

from cacmi_hf.synthetic.demo import AFTER_TRAINING_S, _report, training_budget_seconds, trivial_baseline


def test_trivial_baseline_hand_worked():
    train = {
        "a": {"duration": 10.0, "timestamps": [[0, 2], [3, 5]], "sentences": ["x", "y"]},
        "b": {"duration": 20.0, "timestamps": [[0, 4], [5, 9], [10, 12]], "sentences": ["y", "y", "z"]},
    }
    test = {"t": {"duration": 30.0, "timestamps": [[0, 1]], "sentences": ["x"]}}
    # mean count 2.5 rounds to 2 (banker's rounding), the most frequent sentence is "y"
    assert trivial_baseline(train, test) == {
        "t": [{"timestamp": [0.0, 15.0], "caption": "y"}, {"timestamp": [15.0, 30.0], "caption": "y"}]
    }


def test_training_budget_keeps_the_reserve_and_at_least_one_second():
    assert training_budget_seconds(10, 60.0) == pytest.approx(600 - 60 - AFTER_TRAINING_S)
    assert training_budget_seconds(10, 590.0) == 1.0  # already late: one epoch, then stop
    assert training_budget_seconds(0, 60.0) is None and training_budget_seconds(None, 0.0) is None


def test_report_needs_every_target():
    baseline = {"average": {"METEOR": 0.04, "CIDEr": 0.3, "F1": 0.43}, "SODA_c": 0.06, "videos": {"evaluated": 30}}
    good = {"average": {"METEOR": 0.25, "CIDEr": 2.0, "F1": 0.81}, "SODA_c": 0.23, "videos": {"evaluated": 30}}
    lines, met = _report(good, baseline, quick=False)
    assert met and "targets met" in lines[-1]
    low_soda = {**good, "SODA_c": 0.17}  # 2.8x the baseline's
    assert _report(low_soda, baseline, quick=False)[1] is False
    low_f1 = {**good, "average": {**good["average"], "F1": 0.74}}
    assert _report(low_f1, baseline, quick=False)[1] is False
    no_java = {"average": {"CIDEr": 2.0, "F1": 0.81}, "SODA_c": None, "videos": {"evaluated": 30}}
    assert _report(no_java, baseline, quick=True)[1] is False  # METEOR / SODA_c missing: not met


def test_report_prints_targets_in_the_units_of_the_values():
    baseline = {"average": {"METEOR": 0.04, "CIDEr": 0.3, "F1": 0.43}, "SODA_c": 0.06, "videos": {"evaluated": 30}}
    good = {"average": {"METEOR": 0.25, "CIDEr": 2.0, "F1": 0.81}, "SODA_c": 0.23, "videos": {"evaluated": 30}}
    lines, _ = _report(good, baseline, quick=False)
    rows = {line.split()[0]: line.split() for line in lines[1:-1]}
    assert rows["F1"] == ["F1", "81.00", "43.00", "1.9x", ">=", "75.00"]  # percent beside percent
    assert rows["METEOR"] == ["METEOR", "25.00", "4.00", "6.2x", ">=", "3.0x"]  # a ratio beside the ratios
    assert "F1 >= 75% " in lines[-1]
