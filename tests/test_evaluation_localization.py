"""tIoU and the toolkit's localisation precision / recall (cacmi_hf.evaluation.localization)."""

import numpy as np
import pytest

from cacmi_hf.evaluation.localization import UNION_EPS, f1_score, precision_recall, tiou, tiou_matrix

TIOUS = (0.3, 0.5, 0.7, 0.9)


def test_tiou_hand_worked_values():
    assert tiou([0, 10], [5, 15]) == 5 / (15 + UNION_EPS)  # overlap 5, union 15
    assert tiou([0, 10], [2, 4]) == 2 / (10 + UNION_EPS)  # nested
    assert tiou([0, 10], [20, 30]) == 0.0  # disjoint: union is the summed lengths, intersection 0
    assert tiou([2, 4], [2, 4]) == 2 / (2 + UNION_EPS)  # identical: just below 1
    assert tiou([3, 3], [3, 3]) == 0.0  # zero length
    assert tiou([-2, 2], [0, 4]) == 2 / (6 + UNION_EPS)  # negative times: only differences matter


def test_union_epsilon_puts_exact_halves_below_half():
    # [0, 10] vs [0, 5] is 0.5 on paper but 5 / (10 + 1e-8) in the toolkit: not >= 0.5.
    assert tiou([0, 10], [0, 5]) < 0.5


def test_matrix_equals_pairwise_scalar_loop():
    rng = np.random.default_rng(0)
    a = np.sort(rng.uniform(0, 100, (7, 2)), axis=1)
    b = np.sort(rng.uniform(0, 100, (5, 2)), axis=1)
    loop = [[tiou(x, y) for y in b] for x in a]
    np.testing.assert_array_equal(tiou_matrix(a, b), np.array(loop))
    assert tiou_matrix(a, np.zeros((0, 2))).shape == (7, 0)


def test_precision_recall_hand_worked():
    preds = np.array([[0, 10], [20, 30], [40, 50]], dtype=float)
    file_a = np.array([[0, 10], [22, 30]], dtype=float)  # tIoU ~1 with pred 0, 0.8 with pred 1
    file_b = np.array([[45, 50]], dtype=float)  # tIoU 0.5 - eps with pred 2
    p, r = precision_recall(preds, [file_a, file_b], TIOUS)
    np.testing.assert_allclose(p, [2 / 3, 2 / 3, 2 / 3, 1 / 3])
    np.testing.assert_allclose(r, [1, 1, 1, 1 / 2])
    p_b, r_b = precision_recall(preds, [file_b], TIOUS)
    np.testing.assert_allclose(p_b, [1 / 3, 0, 0, 0])
    np.testing.assert_allclose(r_b, [1, 0, 0, 0])


def test_precision_and_recall_are_maximised_over_files_separately():
    preds = np.array([[0, 10], [20, 30]], dtype=float)
    file_a = np.array([[0, 10]], dtype=float)  # P 1/2, R 1
    file_b = np.array([[0, 10], [20, 30], [40, 50]], dtype=float)  # P 1, R 2/3
    p, r = precision_recall(preds, [file_a, file_b], [0.5])
    assert p[0] == 1.0 and r[0] == 1.0


def test_threshold_comparison_is_strict():
    a, b = np.array([[0.0, 10.0]]), np.array([[3.0, 10.0]])
    exact = tiou(a[0], b[0])
    p, r = precision_recall(a, [b], [exact, np.nextafter(exact, 0.0)])
    np.testing.assert_array_equal(p, [0.0, 1.0])
    np.testing.assert_array_equal(r, [0.0, 1.0])


def test_no_predictions_scores_zero():
    p, r = precision_recall(np.zeros((0, 2)), [np.array([[0.0, 1.0]])], TIOUS)
    np.testing.assert_array_equal(p, 0.0)
    np.testing.assert_array_equal(r, 0.0)


def test_f1():
    assert f1_score(0.5, 1.0) == pytest.approx(2 / 3)
    assert f1_score(0.0, 0.0) == 0.0
