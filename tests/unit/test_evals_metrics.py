"""Statistics: hand-computed values for Wilson, McNemar, ECE, Brier, distinct-n, agreement, bootstrap."""

from __future__ import annotations

import math

import pytest

from alignkit.evals.metrics import (
    brier_score,
    compare_paired,
    distinct_n,
    expected_calibration_error,
    mcnemar,
    mean_metric,
    paired_bootstrap,
    pairwise_agreement,
    reliability_bins,
    wilson,
)
from alignkit.evals.task import Item, mc_scores, select_items


def test_wilson_matches_the_textbook_interval():
    lo, hi = wilson(5, 10)  # p=0.5, n=10: centre 0.5, half-width 0.2634
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)
    assert all(math.isnan(x) for x in wilson(0, 0))


def test_mcnemar_exact_binomial():
    # 10 items only A got right, 2 only B: p = 2 * P(Binom(12, .5) <= 2) = 2 * 79/4096
    a = [1] * 10 + [0] * 2 + [1] * 5
    b = [0] * 10 + [1] * 2 + [1] * 5
    assert mcnemar(a, b) == pytest.approx(2 * 79 / 4096)
    assert mcnemar([1, 0], [1, 0]) == 1.0
    with pytest.raises(ValueError):
        mcnemar([1], [1, 0])


def test_mean_metric_uses_wilson_for_proportions_and_bootstrap_otherwise():
    m = mean_metric([1, 0, 1, 1], key="acc")
    assert m.method == "wilson" and m.n == 4 and m.value == 0.75 and m.key == "acc"
    c = mean_metric([0.2, 0.4, 0.9, float("nan")])
    assert c.method == "bootstrap" and c.n == 3 and c.lo <= c.value <= c.hi


def test_paired_tests_detect_a_real_difference_and_not_noise():
    a = [1.0] * 40 + [0.0] * 60
    b = [1.0] * 80 + [0.0] * 20
    clear = compare_paired("acc", a, b)
    assert clear.test == "mcnemar" and clear.delta == pytest.approx(0.4) and clear.significant
    same = compare_paired("acc", a, a)
    assert not same.significant and same.p == 1.0
    cont = compare_paired("x", [0.1, 0.2, 0.3, 0.4] * 10, [0.6, 0.7, 0.8, 0.9] * 10)
    assert cont.test == "paired-bootstrap" and cont.significant and cont.lo > 0
    lo, hi, p = paired_bootstrap(50, lambda idx: 0.0)
    assert p == 1.0


def test_ece_and_reliability_bins_by_hand():
    conf = [0.95, 0.95, 0.55, 0.55]
    correct = [1, 0, 1, 1]
    # bin 9: conf .95, acc .5 -> |.45| * 2/4; bin 5: conf .55, acc 1 -> |.45| * 2/4
    assert expected_calibration_error(conf, correct) == pytest.approx(0.45)
    bins = reliability_bins(conf, correct)
    assert len(bins) == 10 and bins[9]["count"] == 2 and bins[5]["accuracy"] == 1.0
    assert reliability_bins([1.0], [1])[9]["count"] == 1  # confidence 1.0 falls in the last bin


def test_brier_distinct_and_agreement():
    assert brier_score([[0.7, 0.2, 0.1]], [0]) == pytest.approx(0.09 + 0.04 + 0.01)
    assert distinct_n(["a b a", "a b c"], 1) == pytest.approx(3 / 6)
    assert distinct_n(["a b a", "a b c"], 2) == pytest.approx(3 / 4)  # (a,b) twice, (b,a), (b,c)
    assert pairwise_agreement([1, 1, 2]) == pytest.approx(1 / 3)
    assert pairwise_agreement([3]) == 1.0


def test_acc_norm_is_lm_eval_length_normalisation_by_characters():
    # summed log-probs favour the short choice; per-character they favour the long one
    logprobs = [-4.0, -6.0]
    choices = ["no", "a much longer answer"]
    out = mc_scores(logprobs, choices, 1)
    assert out["acc"] == 0.0 and out["acc_norm"] == 1.0
    assert mc_scores([-1.0, -1.0], ["a", "b"], 0)["pred"] == 0  # ties go to the first index, like np.argmax
    assert mc_scores([-2.0, -1.0, -3.0], ["x", "y", "z"], [0, 1])["acc"] == 1.0  # several gold indices


def test_subsets_are_deterministic_and_in_file_order():
    items = [Item(id=str(i), prompt="") for i in range(100)]
    a = select_items(items, 10, seed=3)
    assert [i.id for i in a] == [i.id for i in select_items(items, 10, seed=3)]
    assert [int(i.id) for i in a] == sorted(int(i.id) for i in a)
    assert [i.id for i in a] != [i.id for i in select_items(items, 10, seed=4)]
    assert len(select_items(items, None, 0)) == 100
