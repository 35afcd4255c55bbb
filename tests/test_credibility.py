"""The credibility arithmetic (coordinator/credibility.py) against values worked by hand."""

from __future__ import annotations

import math

import pytest

from tabgrid.coordinator import credibility as cred

F = 0.2


def test_a_new_worker_is_wrong_with_probability_up_to_f() -> None:
    assert cred.worker_bad(0, F) == pytest.approx(0.2)
    assert cred.credibility(0, F) == pytest.approx(0.8)


def test_evidence_lowers_the_bound_as_f_over_one_minus_f_e_k() -> None:
    # k = 10: 0.2 / (0.8 * e * 10) = 0.025 / e = 0.0091970
    assert cred.worker_bad(10, F) == pytest.approx(0.0091970, rel=1e-4)
    # k = 1: 0.25 / e = 0.0919699, below f
    assert cred.worker_bad(1, F) == pytest.approx(0.0919699, rel=1e-5)
    # a single result is accepted at 1e-4 only from k >= 0.25 / (e * 1e-4) = 919.7
    assert cred.worker_bad(919, F) > 1e-4 >= cred.worker_bad(920, F)


def test_a_group_of_new_colluders_is_wrong_together_with_probability_f_to_the_m() -> None:
    assert cred.group_bad(2, 0, F) == pytest.approx(0.04)
    assert cred.group_bad(3, 0, F) == pytest.approx(0.008)
    # m = 2, K = 100: (0.25)^2 / (e * 100) = 0.0625 / 271.83 = 2.2992e-4
    assert cred.group_bad(2, 100, F) == pytest.approx(2.2992e-4, rel=1e-4)
    # f^m caps it when the evidence is small: m = 2, K = 1 gives 0.0625 / e = 0.023 < 0.04
    assert cred.group_bad(2, 1, F) == pytest.approx(0.0625 / math.e)


def test_one_group_alone_is_right_with_one_minus_its_bad() -> None:
    assert cred.group_credibilities([0.2]) == [pytest.approx(0.8)]
    assert cred.group_credibilities([]) == []


def test_disagreeing_groups_share_the_probability() -> None:
    # B = [0.04, 0.2]: right_a = 0.96 * 0.2 = 0.192, right_b = 0.8 * 0.04 = 0.032,
    # none right = 0.04 * 0.2 = 0.008, total 0.232
    a, b = cred.group_credibilities([0.04, 0.2])
    assert a == pytest.approx(0.192 / 0.232)
    assert b == pytest.approx(0.032 / 0.232)
    assert a + b < 1  # the rest: neither is right


def test_a_credible_dissenter_keeps_a_strong_group_below_the_threshold() -> None:
    # Five honest with K = 1000 against one worker with k = 257 (the case that needs a
    # reference or more results): (1 - Bh) Bc / (Bh Bc + (1 - Bh) Bc + (1 - Bc) Bh)
    bh, bc = cred.group_bad(5, 1000, F), cred.worker_bad(257, F)
    honest, _ = cred.group_credibilities([bh, bc])
    assert honest == pytest.approx((1 - bh) * bc / (bh * bc + (1 - bh) * bc + (1 - bc) * bh))
    assert 0.99 < honest < 1 - 1e-4


def test_no_saboteurs_assumed_means_no_doubt() -> None:
    assert cred.group_bad(1, 0, 0.0) == 0.0


def test_the_spot_check_rate_falls_with_evidence_to_its_floor() -> None:
    trust = cred.Trust()
    assert cred.check_rate(0, trust) == pytest.approx(0.3)
    assert cred.check_rate(25, trust) == pytest.approx(0.15)
    assert cred.check_rate(10_000, trust) == pytest.approx(0.02)
