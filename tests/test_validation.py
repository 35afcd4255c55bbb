from __future__ import annotations

from tabgrid.coordinator.rules import Candidate, check_set, exact
from tabgrid.protocol import Output

D = {c: c * 64 for c in "abc"}


def cand(rid: int, digest: str) -> Candidate:
    return Candidate(rid, {"y": Output(digest=digest, dtype="float32", shape=[4])})


def test_no_verdict_before_quorum() -> None:
    assert check_set([cand(1, D["a"])], 2, exact).canonical is None


def test_two_agreeing_results_make_a_canonical_one() -> None:
    v = check_set([cand(1, D["a"]), cand(2, D["a"])], 2, exact)
    assert (v.canonical, v.valid, v.invalid) == (1, [1, 2], [])


def test_disagreement_waits_for_a_third_result() -> None:
    assert check_set([cand(1, D["a"]), cand(2, D["b"])], 2, exact).canonical is None
    v = check_set([cand(1, D["a"]), cand(2, D["b"]), cand(3, D["b"])], 2, exact)
    assert (v.canonical, v.valid, v.invalid) == (2, [2, 3], [1])


def test_colluding_pair_wins_under_quorum_two() -> None:
    """check_set picks the FIRST result (in return order) that agrees with `quorum` results.
    Two saboteurs returning the same wrong answer before an honest worker therefore win, and
    the honest result, compared with the canonical one, is invalid. Quorum 2 defends against
    lone cheaters, not against collusion; that is what a larger quorum and the distinct-address
    rule are for."""
    v = check_set([cand(1, D["b"]), cand(2, D["b"]), cand(3, D["a"])], 2, exact)
    assert (v.canonical, v.valid, v.invalid) == (1, [1, 2], [3])


def test_honest_first_then_two_saboteurs_still_loses() -> None:
    v = check_set([cand(1, D["a"]), cand(2, D["b"]), cand(3, D["b"])], 2, exact)
    assert v.canonical == 2 and v.invalid == [1]


def test_shape_mismatch_never_agrees() -> None:
    a = Candidate(1, {"y": Output(digest=D["a"], dtype="float32", shape=[4])})
    b = Candidate(2, {"y": Output(digest=D["a"], dtype="float32", shape=[2, 2])})
    assert check_set([a, b], 2, exact).canonical is None


def test_one_witness_is_one_vote_however_many_of_its_results_agree() -> None:
    # Replicas 1 and 2 reached one worker (or one address): their agreement is one word.
    owner = {1: "w1", 2: "w1", 3: "w2"}.__getitem__
    results = [cand(1, D["b"]), cand(2, D["b"])]
    assert check_set(results, 2, exact, owner).canonical is None
    v = check_set([*results, cand(3, D["a"])], 2, exact, owner)
    assert v.canonical is None, "b has one witness, a has one"
    v = check_set([*results, cand(3, D["b"])], 2, exact, owner)
    assert (v.canonical, v.valid, v.invalid) == (1, [1, 2, 3], [])
