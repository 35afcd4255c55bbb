"""Credibility: how likely a worker's next result, or a group of agreeing results, is right.

The model is Sarmenta's ("Sabotage-tolerance mechanisms for volunteer computing systems",
FGCS 18(4), 2002): at most a fraction ``f`` of workers are saboteurs (an assumed bound, the
setting ``trust_saboteur_bound``); a saboteur returns a wrong result with some rate ``s`` it
chooses; honest workers are always right. What we know of a worker is its *evidence* ``k``:
spot-checks it passed (units whose answer was known) plus its current streak of results that
another worker's agreeing result confirmed (BOINC's ``consecutive_valid``, which an invalid
result or an error resets to 0). A result accepted on its worker's word alone confirms nothing
and adds nothing.

Worker. A saboteur with rate ``s`` survives ``k`` checks with probability ``(1-s)^k``, so

    P(saboteur | survived k) = f (1-s)^k / (f (1-s)^k + 1 - f)  <=  f (1-s)^k / (1 - f)
    P(next result wrong)     <=  s f (1-s)^k / (1 - f)  <=  f / ((1 - f) e k)   (k >= 1)

since ``max_s s (1-s)^k = k^k / (k+1)^(k+1) <= 1/(e k)``. This is Sarmenta's spot-checking
bound with blacklisting (credibility ``1 - f/(k e)``), keeping the ``1/(1-f)`` he rounds away.
With ``k = 0`` nothing is known: the worker is wrong with probability up to ``f``, so a new
worker, and one that comes back under a new id, starts at ``1 - f``:

    bad(k) = f                          k = 0
           = min(f, f / ((1-f) e k))    k >= 1          credibility(k) = 1 - bad(k)

Group. Results that agree are all right or all wrong. Sarmenta multiplies the members'
``1 - credibility`` (independent saboteurs); colluders pick their wrong answers together, so a
group of ``m`` members with evidence ``K = sum k`` is bounded the same way as one worker, each
member a saboteur with probability ``f (1-s)^k_i / (1-f)`` and one shared rate ``s``:

    bad(G) = f^m                                 K = 0
           = min(f^m, (f/(1-f))^m / (e K))       K >= 1

For ``m = 1`` this is ``bad(k)``. Members at one client address count as one member (the
setting ``trust_per_address``): one machine running many ids is one witness, not many.

Unit. With groups ``G_1..G_n`` of disagreeing results, group ``a`` is the right one when its
answer is right and every other group's is wrong; with ``B_j = bad(G_j)`` (Sarmenta's
result-group credibility, eq. for CrG):

    credibility(G_a) = (1 - B_a) prod_{j != a} B_j
                       / (prod_j B_j + sum_j (1 - B_j) prod_{i != j} B_i)

A unit is accepted when its best group reaches ``1 - error_rate``; until then it asks for
one more replica, up to ``max_replicas``.

Spot-check rate. New workers are checked often, so that a saboteur that is always wrong is
caught within a few results, and trusted ones never stop being checked (a "sleeper" that
behaves and then defects):  ``q(k) = max(q_min, q_new / (1 + k / k_half))``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

E = math.e


@dataclass(frozen=True)
class Trust:
    """The network's assumptions and rates (settings.Settings holds the defaults)."""

    saboteur_bound: float = 0.2  # f
    check_rate_new: float = 0.3  # q_new
    check_rate_min: float = 0.02  # q_min
    check_half_evidence: float = 25.0  # k_half
    resample_rate: float = 0.03  # units a trusted worker alone could settle, replicated anyway


def worker_bad(k: int, f: float) -> float:
    """Upper bound on the chance that a worker with evidence ``k`` returns a wrong result."""
    return group_bad(1, k, f)


def credibility(k: int, f: float) -> float:
    return 1.0 - worker_bad(k, f)


def group_bad(m: int, evidence: int, f: float) -> float:
    """Upper bound on the chance that ``m`` agreeing members, with evidence ``evidence`` in
    all, are all wrong together (colluding)."""
    if m <= 0:
        return 1.0
    if f <= 0.0:
        return 0.0
    alone = f**m
    if evidence <= 0:
        return alone
    return min(alone, (f / (1.0 - f)) ** m / (E * evidence))


def group_credibilities(bad: Sequence[float]) -> list[float]:
    """Each group's chance of being the right one, given every group's ``bad``."""
    n = len(bad)
    if n == 0:
        return []
    right = []
    for a in range(n):
        others = math.prod(bad[j] for j in range(n) if j != a)
        right.append((1.0 - bad[a]) * others)
    none_right = math.prod(bad)
    total = none_right + sum(right)
    if total <= 0.0:
        # Every group is certainly right: only possible with f = 0, where one group exists.
        return [1.0 / n] * n
    return [r / total for r in right]


def check_rate(k: int, trust: Trust) -> float:
    """The fraction of a worker's leases that are spot-checks."""
    return max(trust.check_rate_min, trust.check_rate_new / (1.0 + k / trust.check_half_evidence))
