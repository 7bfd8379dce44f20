"""Who follows whom: the follower model of DDIA chapter 1 ("Describing Load") and a social graph
drawn from it, the same graph in the simulator and in the live service.

``FollowerDistribution`` is notebook 03's follower model: followers per account follow a Pareto
(power-law) law with tail index ``alpha`` over a population of ``accounts`` accounts, truncated
at the population's largest account, ``largest = minimum * accounts ** (1 / alpha)`` (the
rank-1 account of the rank-size, Zipf, form), and calibrated to a mean of ``mean`` followers
(for the truncated law the mean is linear in ``minimum``, so ``minimum`` has a closed form).
``analysis/timeline.py`` explains the calibration to DDIA's figures (a mean of 75 followers,
150 million accounts) and re-exports the class, so notebook 03's numbers do not move.

``SocialGraph.generate(accounts=, mean_followers=, tail_index=, seed=)`` draws one graph: each
account's follower count from that law at ``accounts`` and ``mean_followers``, and its followers
uniformly among the other accounts. Pure numpy (``scipy.special`` for one integral); no SimPy,
no service: layer 3, beside ``workload``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .validation import check_int, check_real

__all__ = [
    "DDIA_MEAN_FOLLOWERS",
    "TWITTER_ACTIVE_ACCOUNTS",
    "FollowerDistribution",
    "SocialGraph",
]

#: DDIA chapter 1, "Describing Load": each post is delivered to about 75 followers on average.
DDIA_MEAN_FOLLOWERS = 75.0
#: Active users in Krikorian's "Timelines at Scale" (2012), as High Scalability reported it.
TWITTER_ACTIVE_ACCOUNTS = 150_000_000


def _power_integral(a: float, b: float, exponent: float) -> float:
    """``integral of x ** -exponent dx`` from ``a`` to ``b`` (0 < a <= b), exact at exponent 1
    too: ``a ** (1 - exponent) * L * exprel((1 - exponent) * L)`` with ``L = ln(b / a)``."""
    if b <= a:
        return 0.0
    from scipy.special import exprel  # on first use: see analysis/__init__.py

    span = math.log(b / a)
    return float(a ** (1.0 - exponent) * span * exprel((1.0 - exponent) * span))


@dataclass(frozen=True, kw_only=True)
class FollowerDistribution:
    """Followers per account: a Pareto law with tail index ``tail_index``, truncated at the
    population's largest account and calibrated to ``mean`` (see the module docstrings here and in
    ``analysis/timeline.py``).

    ``minimum`` and ``largest`` (followers) are derived. Raises ValueError when the tail is so
    heavy that the largest account would have more followers than there are other accounts
    (at 150 million accounts and a mean of 75, a tail index below about 1.15).
    """

    tail_index: float = 1.3
    mean: float = DDIA_MEAN_FOLLOWERS
    accounts: float = TWITTER_ACTIVE_ACCOUNTS
    minimum: float = field(init=False)
    largest: float = field(init=False)

    def __post_init__(self) -> None:
        alpha = check_real("tail_index", self.tail_index, low=0.5, high=5.0)
        accounts = check_real("accounts", self.accounts, low=2.0)
        mean = check_real("mean", self.mean, low=0, low_open=True, high=accounts - 1)
        # mean of the truncated law = alpha * minimum * integral(x^-alpha, 1, N^(1/alpha)) / Z
        # (substituting x -> minimum * x), with Z = 1 - 1/N the mass kept by the truncation.
        kept = 1.0 - 1.0 / accounts
        unit_mean = alpha * _power_integral(1.0, accounts ** (1.0 / alpha), alpha) / kept
        minimum = mean / unit_mean
        largest = minimum * accounts ** (1.0 / alpha)
        if largest > accounts - 1:
            raise ValueError(
                f"tail_index must be large enough that the largest account has fewer followers "
                f"than there are other accounts ({accounts - 1:.3g}); tail_index={alpha:g} "
                f"gives {largest:.3g}")
        object.__setattr__(self, "tail_index", alpha)
        object.__setattr__(self, "accounts", accounts)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "minimum", minimum)
        object.__setattr__(self, "largest", largest)

    @property
    def _kept(self) -> float:
        return 1.0 - 1.0 / self.accounts

    def share_above(self, followers: float) -> float:
        """The share of accounts with more than ``followers`` followers, ``P(F > x)``:
        ``((minimum / x) ** alpha - 1 / accounts) / (1 - 1 / accounts)`` inside the support."""
        x = check_real("followers", followers, low=0, allow_inf=True)
        if x <= self.minimum:
            return 1.0
        if x >= self.largest:
            return 0.0
        return ((self.minimum / x) ** self.tail_index - 1.0 / self.accounts) / self._kept

    def accounts_above(self, followers: float) -> float:
        """How many accounts have more than ``followers`` followers: ``accounts * P(F > x)``."""
        return self.accounts * self.share_above(followers)

    def partial_mean(self, low: float = 0.0, high: float = math.inf) -> float:
        """``E[F; low < F <= high]``: the mean followers per account counting only accounts
        with more than ``low`` and at most ``high`` followers (0 elsewhere). ``partial_mean()``
        is ``mean``; ``partial_mean(high=T) + partial_mean(low=T)`` is ``mean`` for any T."""
        low = check_real("low", low, low=0, allow_inf=True)
        high = check_real("high", high, low=0, allow_inf=True)
        a, b = max(low, self.minimum), min(high, self.largest)
        if b <= a:
            return 0.0
        alpha, m = self.tail_index, self.minimum
        return alpha * m ** alpha * _power_integral(a, b, alpha) / self._kept

    def quantile(self, u: float) -> float:
        """The ``u``-quantile of followers (0 <= u <= 1): ``minimum * (1 - u Z) ** (-1/alpha)``
        with ``Z = 1 - 1/accounts``; ``quantile(1)`` is ``largest``."""
        u = check_real("u", u, low=0, high=1)
        return self.minimum * (1.0 - u * self._kept) ** (-1.0 / self.tail_index)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` accounts' follower counts (floats), by inversion of the distribution."""
        u = rng.random(size)
        return self.minimum * (1.0 - u * self._kept) ** (-1.0 / self.tail_index)


def _follower_counts(rng: np.random.Generator, accounts: int, mean: float,
                     tail_index: float) -> np.ndarray:
    """Integer follower counts, shape ``(accounts,)``, summing to ``round(accounts * mean)``,
    each at most ``accounts - 1``, in a random order of accounts."""
    # The law's shape at this population (minimum 1, truncated at accounts ** (1 / alpha)), by
    # stratified inversion: one uniform in each of `accounts` equal slices of (0, 1), so the
    # sample holds the tail (the top slice is near the largest account) and its mean is steady.
    kept = 1.0 - 1.0 / accounts
    u = (np.arange(accounts) + rng.random(accounts)) / accounts
    x = (1.0 - u * kept) ** (-1.0 / tail_index)
    # Scaled to the mean; counts above accounts - 1 capped there and the others scaled up
    # to keep the total (the law itself may be too heavy for a small population).
    target, cap = accounts * mean, accounts - 1
    for _ in range(100):
        free = x < cap
        rest = target - cap * (accounts - int(free.sum()))
        x = np.where(free, x * (rest / x[free].sum()), cap) if free.any() else x
        if not np.any(x > cap):
            break
        x = np.minimum(x, cap)
    counts = np.floor(x).astype(np.int64)
    # Largest remainders make up the total (a rounding that keeps the mean exactly).
    short = round(accounts * mean) - int(counts.sum())
    room = counts < accounts - 1
    if short > 0:
        order = np.argsort(-(x - counts) + np.where(room, 0.0, np.inf), kind="stable")
        counts[order[:min(short, int(room.sum()))]] += 1
    return counts[rng.permutation(accounts)]


def _distinct_others(rng: np.random.Generator, owners: np.ndarray, counts: np.ndarray,
                     accounts: int) -> np.ndarray:
    """For each owner ``owners[i]``, ``counts[i]`` distinct accounts other than itself, drawn
    uniformly (each ``counts[i] <= (accounts - 1) / 2``): one draw for every slot at once, then
    the duplicates drawn again until none is left. Returns the chosen accounts, shape
    ``(counts.sum(),)``, grouped by owner in the order of ``owners``."""
    owner = np.repeat(owners, counts)
    chosen = np.empty(owner.size, dtype=np.int64)
    todo = np.arange(owner.size)
    while todo.size:
        draw = rng.integers(0, accounts - 1, size=todo.size)
        chosen[todo] = draw + (draw >= owner[todo])   # skip the owner itself: uniform on the rest
        key = owner * accounts + chosen
        order = np.argsort(key, kind="stable")
        repeat = np.zeros(owner.size, dtype=bool)
        repeat[order[1:]] = key[order[1:]] == key[order[:-1]]
        todo = np.flatnonzero(repeat)
    return chosen


@dataclass(frozen=True, eq=False)
class SocialGraph:
    """A directed follow graph over accounts ``0 .. accounts - 1``.

    ``edges``: int64 array, shape ``(m, 2)``, one row ``(follower, followee)`` per follow, sorted
    by follower then followee; no self-follows, no duplicate rows. Arrays are read-only. Build one
    with ``SocialGraph.generate``; ``SocialGraph(accounts=, edges=)`` validates a given edge list.
    """

    accounts: int
    edges: np.ndarray
    _by_followee: np.ndarray = field(init=False, repr=False)
    _followee_start: np.ndarray = field(init=False, repr=False)
    _follower_start: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = check_int("accounts", self.accounts, low=2)
        edges = np.asarray(self.edges, dtype=np.int64).reshape(-1, 2)
        if edges.size and (edges.min() < 0 or edges.max() >= n):
            raise ValueError(f"edges must name accounts in [0, {n - 1}]")
        if np.any(edges[:, 0] == edges[:, 1]):
            raise ValueError("edges must not hold a self-follow (follower == followee)")
        key = edges[:, 0] * n + edges[:, 1]
        order = np.argsort(key, kind="stable")
        edges = edges[order]
        if np.any(key[order][1:] == key[order][:-1]):
            raise ValueError("edges must not hold the same follow twice")
        by_followee = edges[np.lexsort((edges[:, 0], edges[:, 1]))]
        follower_start = np.searchsorted(edges[:, 0], np.arange(n + 1))
        followee_start = np.searchsorted(by_followee[:, 1], np.arange(n + 1))
        for array in (edges, by_followee, follower_start, followee_start):
            array.flags.writeable = False
        object.__setattr__(self, "accounts", n)
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "_by_followee", by_followee)
        object.__setattr__(self, "_follower_start", follower_start)
        object.__setattr__(self, "_followee_start", followee_start)

    @classmethod
    def generate(cls, *, accounts: int, mean_followers: float, tail_index: float = 1.3,
                 seed: int) -> SocialGraph:
        """Draw a graph: follower counts from the law of ``FollowerDistribution(tail_index=
        tail_index, mean=mean_followers, accounts=accounts)`` (stratified inversion, so the
        sample holds the law's tail; scaled so that the mean is ``mean_followers`` up to
        rounding, each count capped at ``accounts - 1``, the law being too heavy for a small
        population otherwise), assigned to accounts in a random order, and each account's followers
        drawn uniformly among the other accounts without replacement. Same arguments, same
        graph (``numpy.random.default_rng(seed)``).

        Raises ValueError naming ``accounts`` (an integer >= 2), ``mean_followers`` (in
        ``(0, accounts - 1]``), ``tail_index`` (in [0.5, 5]) or ``seed`` (an integer >= 0).
        """
        n = check_int("accounts", accounts, low=2)
        mean = check_real("mean_followers", mean_followers, low=0, low_open=True, high=n - 1)
        alpha = check_real("tail_index", tail_index, low=0.5, high=5.0)
        seed = check_int("seed", seed, low=0)
        rng = np.random.default_rng(seed)
        counts = _follower_counts(rng, n, mean, alpha)
        followees = np.arange(n)
        light = counts <= (n - 1) // 2
        followers = _distinct_others(rng, followees[light], counts[light], n)
        parts = [np.column_stack((followers, np.repeat(followees[light], counts[light])))]
        heavy = np.flatnonzero(~light)
        if heavy.size:
            # Draw the few accounts that do NOT follow each heavy account (fewer than half).
            skipped = _distinct_others(rng, heavy, n - 1 - counts[heavy], n)
            bounds = np.concatenate(([0], np.cumsum(n - 1 - counts[heavy])))
            for i, a in enumerate(heavy):
                keep = np.ones(n, dtype=bool)
                keep[a] = False
                keep[skipped[bounds[i]:bounds[i + 1]]] = False
                who = np.flatnonzero(keep)
                parts.append(np.column_stack((who, np.full(who.size, a))))
        return cls(accounts=n, edges=np.concatenate(parts))

    @property
    def follows(self) -> int:
        """The number of follows (edges)."""
        return int(self.edges.shape[0])

    @property
    def follower_counts(self) -> np.ndarray:
        """Followers of each account, shape ``(accounts,)``."""
        return np.diff(self._followee_start)

    @property
    def followee_counts(self) -> np.ndarray:
        """Accounts each account follows, shape ``(accounts,)``."""
        return np.diff(self._follower_start)

    @property
    def celebrity(self) -> int:
        """The account with the most followers (the lowest id among ties)."""
        return int(np.argmax(self.follower_counts))

    def _account(self, a: int) -> int:
        return check_int("account", a, low=0, high=self.accounts - 1)

    def followers_of(self, a: int) -> np.ndarray:
        """The accounts following ``a``, ascending (read-only int64 array)."""
        a = self._account(a)
        return self._by_followee[self._followee_start[a]:self._followee_start[a + 1], 0]

    def followees_of(self, u: int) -> np.ndarray:
        """The accounts ``u`` follows, ascending (read-only int64 array)."""
        u = self._account(u)
        return self.edges[self._follower_start[u]:self._follower_start[u + 1], 1]
