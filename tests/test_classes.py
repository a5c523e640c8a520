"""IO classes, counts, quartiles and the random baseline against hand-made answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wcos_casestudies.constants import CLASS_NAMES
from wcos_casestudies.utils import approx, category_stats, classify, cosine_rows, quartiles, random_cosine_interval

# (gatelin, gateout, linout) -> class name under the corrected rule (paper Section 3 and the Figure 2 prototypes)
PROTOTYPES = [
    ((1.0, 0.9, 0.9), "enrichment"),
    ((-1.0, -0.9, 0.9), "enrichment"),  # mirrored variant
    ((-1.0, 0.9, 0.9), "atypical enrichment"),
    ((0.0, 0.9, 0.9), "atypical enrichment"),
    ((0.0, 0.0, 0.9), "conditional enrichment"),
    ((0.9, 0.0, 0.9), "atypical conditional enrichment"),
    ((0.0, 0.9, 0.0), "proportional change"),
    ((0.0, -0.9, 0.0), "proportional change"),
    ((0.8, 0.9, 0.0), "atypical proportional change"),
    ((0.0, 0.0, 0.0), "orthogonal output"),
    ((0.9, 0.0, 0.0), "orthogonal output"),  # always typical
    ((1.0, -0.9, -0.9), "depletion"),
    ((-1.0, 0.9, -0.9), "depletion"),  # mirrored variant
    ((1.0, 0.9, -0.9), "atypical depletion"),
    ((0.0, 0.0, -0.9), "conditional depletion"),
    ((-0.7, 0.0, -0.9), "atypical conditional depletion"),
]


def _classify(rows, rule="corrected", threshold=0.5):
    t = torch.tensor(rows, dtype=torch.float64)
    return classify(t[:, 0], t[:, 1], t[:, 2], threshold=threshold, rule=rule)


def test_all_eleven_classes_and_both_variants():
    codes = _classify([row for row, _ in PROTOTYPES]).tolist()
    assert [CLASS_NAMES[c] for c in codes] == [name for _, name in PROTOTYPES]
    assert set(codes) == set(range(11))


def test_threshold_is_strict():
    # |c| == t counts as 0 on every axis
    assert approx(torch.tensor([0.5, -0.5, 0.5000001, -0.5000001, 0.0])).tolist() == [0, 0, 1, -1, 0]
    codes = _classify([(0.5, 0.5, 0.5), (0.5, 0.9, 0.9), (0.9, 0.9, -0.5), (0.0, -0.5, 0.51)])
    assert [CLASS_NAMES[c] for c in codes] == [
        "orthogonal output", "atypical enrichment", "atypical proportional change", "conditional enrichment"]


def test_threshold_parameter():
    row = [(0.0, 0.0, 0.45)]
    assert CLASS_NAMES[_classify(row, threshold=0.5)[0]] == "orthogonal output"
    assert CLASS_NAMES[_classify(row, threshold=0.4)[0]] == "conditional enrichment"


def test_legacy_copysign_differs_only_on_mirrored_variants():
    rows = [row for row, _ in PROTOTYPES]
    corrected = _classify(rows).tolist()
    legacy = _classify(rows, rule="legacy_copysign").tolist()
    diffs = {(tuple(rows[i]), CLASS_NAMES[corrected[i]], CLASS_NAMES[legacy[i]])
             for i in range(len(rows)) if corrected[i] != legacy[i]}
    assert diffs == {
        ((-1.0, -0.9, 0.9), "enrichment", "atypical enrichment"),
        ((-1.0, 0.9, -0.9), "depletion", "atypical depletion"),
        ((-1.0, 0.9, 0.9), "atypical enrichment", "enrichment"),
    }
    # legacy depletion is typical when copysign(gatelin, gateout) is negative, whatever gatelin's sign
    assert CLASS_NAMES[_classify([(-1.0, -0.9, -0.9)], rule="legacy_copysign")[0]] == "depletion"
    assert CLASS_NAMES[_classify([(-1.0, -0.9, -0.9)])[0]] == "atypical depletion"


def test_classify_matches_a_slow_loop():
    gen = torch.Generator().manual_seed(0)
    cos = (torch.rand(3, 4000, generator=gen, dtype=torch.float64) * 2 - 1)
    fast = classify(cos[0], cos[1], cos[2]).tolist()
    table = {(1, 1): (0, 1), (1, 0): (2, 3), (0, 1): (4, 5), (0, 0): (6, 6), (-1, 1): (7, 8), (-1, 0): (9, 10)}

    def a(c):
        return 1 if c > 0.5 else (-1 if c < -0.5 else 0)

    for i in range(cos.shape[1]):
        gl, go, lo = (a(float(cos[k, i])) for k in range(3))
        typical = gl == lo * go or (lo == 0 and go == 0)
        assert fast[i] == table[(lo, abs(go))][0 if typical else 1]


def test_non_gated_uses_linout_alone():
    codes = classify(None, None, torch.tensor([0.9, 0.1, -0.7, 0.5]))
    assert [CLASS_NAMES[c] for c in codes] == ["enrichment", "orthogonal output", "depletion", "orthogonal output"]


def test_cosine_rows_known_vectors():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    b = torch.tensor([[0.0, 3.0], [1.0, 1.0], [-1.0, 0.0]])
    assert torch.allclose(cosine_rows(a, b), torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64))


def test_category_stats_and_quartiles():
    gen = torch.Generator().manual_seed(1)
    categories = torch.randint(0, 11, (5, 300), generator=gen)
    counts = category_stats(categories)
    for layer in range(5):
        for code in range(11):
            assert counts[layer, code] == int((categories[layer] == code).sum())
    values = torch.rand(5, 301, generator=gen, dtype=torch.float64)
    q = quartiles(values)
    assert q.shape == (5, 5)
    expected = np.quantile(values.numpy(), [0, 0.25, 0.5, 0.75, 1], axis=1)
    assert np.allclose(q.numpy(), expected)


@pytest.mark.parametrize("d", [3, 16, 576, 4096])
def test_random_baseline_against_beta_distribution(d):
    scipy_stats = pytest.importorskip("scipy.stats")
    a = (d - 1) / 2
    expected = 2 * scipy_stats.beta.ppf(0.975, a, a) - 1
    assert math.isclose(random_cosine_interval(d), expected, rel_tol=1e-4, abs_tol=1e-6)


def test_random_baseline_spec_values():
    assert round(random_cosine_interval(4096), 3) == 0.031
    assert round(random_cosine_interval(576), 3) == 0.082
