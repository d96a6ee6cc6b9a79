"""Agreement math against values worked out by hand (and the textbook examples)."""

from __future__ import annotations

import math

import pytest

from alignkit.annotate.agreement import (binomial_two_sided_p, category_table, cohen_kappa, fleiss_kappa,
                                         wilson_interval)
from alignkit.annotate.dataset import majority


def test_cohen_kappa_textbook_yes_no_example():
    # 50 items: both yes 20, A yes / B no 5, A no / B yes 10, both no 15.
    # p_o = 35/50 = 0.7; A says yes 25/50, B 30/50; p_e = 0.5*0.6 + 0.5*0.4 = 0.5; kappa = 0.2/0.5 = 0.4
    a = ["y"] * 20 + ["y"] * 5 + ["n"] * 10 + ["n"] * 15
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_cohen_kappa_four_labels_by_hand():
    # p_o = 4/5; counts r1 {1:2, 2:2, tie:1}, r2 {1:1, 2:3, tie:1}; p_e = (2*1 + 2*3 + 1*1)/25 = 0.36
    # kappa = (0.8 - 0.36) / 0.64 = 0.6875
    r1 = ["1", "1", "2", "2", "tie"]
    r2 = ["1", "2", "2", "2", "tie"]
    assert cohen_kappa(r1, r2) == pytest.approx(0.6875)
    assert cohen_kappa(r1, r1) == pytest.approx(1.0)
    # systematic disagreement on two balanced labels: p_o = 0, p_e = 0.5 -> kappa = -1
    assert cohen_kappa(["1", "2", "1", "2"], ["2", "1", "2", "1"]) == pytest.approx(-1.0)


def test_cohen_kappa_undefined_cases():
    assert math.isnan(cohen_kappa(["1", "1"], ["1", "1"]))  # p_e = 1: nothing beyond chance to measure
    assert math.isnan(cohen_kappa([], []))
    with pytest.raises(ValueError, match="different numbers"):
        cohen_kappa(["1"], ["1", "2"])


def test_fleiss_kappa_small_table_by_hand():
    # 3 items x 3 raters, 2 labels: rows [3,0], [2,1], [0,3]
    # P_i = 1, (4+1-3)/6 = 1/3, 1 -> P_bar = 7/9; p = (5/9, 4/9) -> P_e = 41/81
    # kappa = (63/81 - 41/81) / (40/81) = 22/40 = 0.55
    assert fleiss_kappa([[3, 0], [2, 1], [0, 3]]) == pytest.approx(0.55)


def test_fleiss_kappa_textbook_example():
    # Fleiss (1971)-style worked example: 10 subjects, 14 raters, 5 categories; P_bar = 0.378, P_e = 0.213
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(table) == pytest.approx(0.20993, abs=5e-5)


def test_fleiss_kappa_perfect_and_variable_raters():
    assert fleiss_kappa([[3, 0, 0], [0, 3, 0], [0, 0, 3]]) == pytest.approx(1.0)
    # items with one rating carry no agreement information and are dropped: same as without them
    assert fleiss_kappa([[3, 0], [2, 1], [0, 3], [1, 0]]) == pytest.approx(0.55)
    # variable raters per item (the generalized form): [2,0] -> P=1, [1,2] -> P=1/3, [0,2] -> P=1
    # P_bar = 7/9, p = (3/7, 4/7), P_e = 25/49; kappa = (343/441 - 225/441) / (24/49) = 118/216
    assert fleiss_kappa([[2, 0], [1, 2], [0, 2]]) == pytest.approx(118 / 216)
    assert math.isnan(fleiss_kappa([[1, 0], [0, 1]]))


def test_category_table_counts_labels():
    table = category_table([["1", "1", "tie"], ["2"]], ["1", "2", "tie", "both_bad"])
    assert table == [[2, 0, 1, 0], [0, 1, 0, 0]]
    with pytest.raises(ValueError, match="not one of"):
        category_table([["3"]], ["1", "2"])


def test_binomial_two_sided_p_by_hand():
    assert binomial_two_sided_p(9, 10) == pytest.approx(22 / 1024)  # P(X>=9) + P(X<=1) = 2 * 11/1024
    assert binomial_two_sided_p(5, 10) == pytest.approx(1.0)
    assert binomial_two_sided_p(0, 3) == pytest.approx(2 / 8)
    assert binomial_two_sided_p(0, 0) == 1.0
    assert binomial_two_sided_p(1500, 2000) < 1e-50  # no overflow with thousands of judgments


def test_wilson_interval_brackets_the_share():
    low, high = wilson_interval(5, 10)
    assert low < 0.5 < high and low == pytest.approx(0.2366, abs=1e-3) and high == pytest.approx(0.7634, abs=1e-3)
    assert wilson_interval(0, 4)[0] == 0.0


def test_majority_needs_a_strict_winner():
    assert majority(["1", "1", "2"]) == ("1", pytest.approx(2 / 3))
    assert majority(["1", "2", "tie"])[0] is None
    assert majority(["tie", "tie", "1"]) == ("tie", pytest.approx(2 / 3))
    assert majority([]) == (None, 0.0)
