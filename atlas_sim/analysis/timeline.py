"""The home-timeline load model of DDIA chapter 1 ("Describing Load"), in closed form.

DDIA describes Twitter's load in 2012 with a few load parameters: about 4.6k posts a second on
average and over 12k at peak, 300k home-timeline reads a second, each post delivered to about 75
followers on average, and some accounts with over 30 million followers. Two ways to serve a home
timeline (the posts of everyone a user follows):

* **fan-out on read**: store each post once; a timeline read looks up the recent posts of every
  account the reader follows and merges them;
* **fan-out on write**: when an account posts, insert the post into the cached home timeline of
  each of its followers; a timeline read is one cache lookup;
* the **hybrid** Twitter moved to: fan out on write, except for accounts above a follower
  threshold ("celebrities"), whose posts are fetched on read and merged in.

Units: operations per second. A *timeline insert* is one post written into one follower's cached
timeline; a *lookup* is one fetch on the read path (the reader's cached timeline, or one followed
account's recent posts); a *post write* stores a post once, in every approach.

The follower distribution
-------------------------
Followers per account follow a Pareto (power-law) law with tail index ``alpha`` (the share of
accounts with more than ``x`` followers falls as ``x ** -alpha``), over a population of
``accounts`` accounts, calibrated so that:

* the population's largest account has ``largest = minimum * accounts ** (1 / alpha)``
  followers: the level that one account in ``accounts`` exceeds, the rank-1 account of the
  rank-size (Zipf) form, where the account of rank ``k`` has ``minimum * (accounts / k) **
  (1 / alpha)`` followers. The law is truncated there (no account has more);
* the mean is ``mean`` (75): for the truncated law the mean is linear in ``minimum``, so
  ``minimum`` has a closed form.

With DDIA's mean of 75, 150 million accounts (the active users Raffi Krikorian's talk "Timelines
at Scale" reported, as summarised by Todd Hoff, "The Architecture Twitter Uses to Deal with 150M
Active Users...", High Scalability, 2013) and ``alpha = 1.3``, the largest account has 34 million
followers, above DDIA's "over 30 million"; the smallest has 17.5. This is a model, not a fit:
measured follower counts bend away from a straight power law in the tail (H. Kwak et al., "What
is Twitter, a Social Network or a News Media?", WWW 2010).

Assumptions, stated once:

* every account posts at the same rate (posts are **not** weighted by poster activity), so the
  mean followers per post equals the mean followers per account;
* every account reads its home timeline at the same rate, so a read looks up, on average, as
  many followed accounts as an account has followers (each follow has one follower and one
  followee): ``mean`` under fan-out on read, ``1 + E[F; F > threshold]`` under the hybrid.

Formulas (``P`` posts/s, ``R`` timeline reads/s, ``F`` followers of an account, ``E[F; A]`` the
mean of ``F`` counted only where ``A`` holds):

=================  ==================  ========================  ===========================
approach           timeline inserts/s  lookups/s                 one post's inserts, at most
=================  ==================  ========================  ===========================
fan-out on write   ``P E[F]``          ``R``                     ``largest``
fan-out on read    0                   ``R E[F]``                0
hybrid, ``T``      ``P E[F; F <= T]``  ``R (1 + E[F; F > T])``   ``min(T, largest)``
=================  ==================  ========================  ===========================

plus ``P`` post writes in each. At DDIA's figures fan-out on write makes ``4600 * 75 = 345,000``
timeline inserts a second. Moving the threshold moves follows from one column to the other:
each follow of an account above ``T`` costs the follower's read rate instead of the account's
post rate. With every account posting and reading at the same rates, the cheaper side is the
same for every follow, so total work is smallest at one end (all fan-out on write when reads
outnumber posts, as here): the hybrid is not about total work but about the worst single post.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

# The follower model lives in ``atlas_sim.social`` (the service builds its graph from it); it
# is re-exported here, so ``analysis.timeline.FollowerDistribution`` is the very same class.
from ..social import DDIA_MEAN_FOLLOWERS, TWITTER_ACTIVE_ACCOUNTS, FollowerDistribution
from ..validation import check_real

__all__ = [
    "APPROACHES",
    "DDIA_LARGEST_FOLLOWERS",
    "DDIA_MEAN_FOLLOWERS",
    "DDIA_PEAK_POSTS_PER_SECOND",
    "DDIA_POSTS_PER_SECOND",
    "DDIA_READS_PER_SECOND",
    "TWITTER_ACTIVE_ACCOUNTS",
    "FollowerDistribution",
    "HomeTimeline",
    "TimelineCosts",
]

#: DDIA chapter 1, "Describing Load" (figures from Twitter, November 2012).
DDIA_POSTS_PER_SECOND = 4_600.0
DDIA_PEAK_POSTS_PER_SECOND = 12_000.0
DDIA_READS_PER_SECOND = 300_000.0
DDIA_LARGEST_FOLLOWERS = 30_000_000.0  # "some users have over 30 million followers"

Approach = Literal["fan-out on write", "fan-out on read", "hybrid"]
APPROACHES: tuple[Approach, ...] = ("fan-out on write", "fan-out on read", "hybrid")


@dataclass(frozen=True)
class TimelineCosts:
    """One approach's work, in operations per second (see the module docstring's table)."""

    approach: Approach
    threshold: float  # followers above which an account is read on demand (inf: never)
    post_writes: float
    timeline_inserts: float
    peak_timeline_inserts: float
    lookups_per_read: float
    lookups: float
    worst_post: float  # timeline inserts made for one post, at most
    accounts_read_on_demand: float

    @property
    def total(self) -> float:
        """Post writes + timeline inserts + lookups, per second."""
        return self.post_writes + self.timeline_inserts + self.lookups


@dataclass(frozen=True, kw_only=True)
class HomeTimeline:
    """The home-timeline load, with DDIA's figures as defaults.

    ``posts_per_second`` (average), ``peak_posts_per_second``, ``reads_per_second`` (home
    timeline reads) and ``followers`` (a ``FollowerDistribution``). Costs come from
    ``fan_out_on_write()``, ``fan_out_on_read()`` and ``hybrid(threshold)``.
    """

    posts_per_second: float = DDIA_POSTS_PER_SECOND
    peak_posts_per_second: float = DDIA_PEAK_POSTS_PER_SECOND
    reads_per_second: float = DDIA_READS_PER_SECOND
    followers: FollowerDistribution = field(default_factory=FollowerDistribution)

    def __post_init__(self) -> None:
        check_real("posts_per_second", self.posts_per_second, low=0, low_open=True)
        check_real("peak_posts_per_second", self.peak_posts_per_second,
                   low=self.posts_per_second)
        check_real("reads_per_second", self.reads_per_second, low=0)
        if not isinstance(self.followers, FollowerDistribution):
            raise ValueError(f"followers must be a FollowerDistribution, got {self.followers!r}")

    @property
    def read_write_ratio(self) -> float:
        """Timeline reads per post."""
        return self.reads_per_second / self.posts_per_second

    def hybrid(self, threshold: float) -> TimelineCosts:
        """Fan out on write for accounts with at most ``threshold`` followers; read the others'
        posts on demand. ``threshold=inf`` is fan-out on write."""
        threshold = check_real("threshold", threshold, low=0, allow_inf=True)
        f = self.followers
        pushed = f.partial_mean(high=threshold)
        pulled = f.partial_mean(low=threshold)
        return TimelineCosts(
            approach="hybrid", threshold=threshold, post_writes=self.posts_per_second,
            timeline_inserts=self.posts_per_second * pushed,
            peak_timeline_inserts=self.peak_posts_per_second * pushed,
            lookups_per_read=1.0 + pulled, lookups=self.reads_per_second * (1.0 + pulled),
            worst_post=min(threshold, f.largest) if threshold >= f.minimum else 0.0,
            accounts_read_on_demand=f.accounts_above(threshold))

    def fan_out_on_write(self) -> TimelineCosts:
        """Every post inserted into every follower's timeline: ``P * mean`` inserts a second
        (345,000 at DDIA's figures), one lookup per read."""
        costs = self.hybrid(math.inf)
        return dataclasses.replace(costs, approach="fan-out on write")

    def fan_out_on_read(self) -> TimelineCosts:
        """No timeline inserts; each read looks up every followed account: ``R * mean``
        lookups a second (22.5 million at DDIA's figures)."""
        f = self.followers
        return TimelineCosts(
            approach="fan-out on read", threshold=0.0, post_writes=self.posts_per_second,
            timeline_inserts=0.0, peak_timeline_inserts=0.0, lookups_per_read=f.mean,
            lookups=self.reads_per_second * f.mean, worst_post=0.0,
            accounts_read_on_demand=f.accounts)

    def approaches(self, threshold: float) -> dict[str, TimelineCosts]:
        """The three approaches, the hybrid at ``threshold``."""
        return {"fan-out on write": self.fan_out_on_write(),
                "fan-out on read": self.fan_out_on_read(),
                "hybrid": self.hybrid(threshold)}

    def celebrity_post_seconds(self) -> float:
        """How many seconds of the whole site's average timeline-insert work one post by the
        largest account costs under fan-out on write: ``largest / (P * mean)``."""
        return self.followers.largest / (self.posts_per_second * self.followers.mean)

    def work_minimising_threshold(self) -> float:
        """The threshold with the least total work. Raising the threshold by ``dT`` moves the
        follows of accounts with ``T`` followers from lookups (``R`` per follow) to inserts
        (``P`` per follow), so d(total)/dT = (P - R) T f(T): the least work is at an end, all
        fan-out on write (``largest``) when reads outnumber posts, all on read (``minimum``)
        when posts outnumber reads (either, when equal)."""
        if self.reads_per_second >= self.posts_per_second:
            return self.followers.largest
        return self.followers.minimum

    @staticmethod
    def threshold_for_delivery(target: float = 5.0, inserts_per_second: float = 31e6 / 300) \
            -> float:
        """The threshold that lets every fanned-out post reach all its followers within
        ``target`` seconds when one post's fan-out proceeds at ``inserts_per_second``:
        ``target * inserts_per_second``.

        The defaults come from the same summary of "Timelines at Scale": Twitter aims to
        deliver a post within 5 seconds, and a post by Lady Gaga could take up to 5 minutes
        to reach her 31 million followers (so about 103,000 inserts a second for one post).
        """
        target = check_real("target", target, low=0, low_open=True)
        rate = check_real("inserts_per_second", inserts_per_second, low=0, low_open=True)
        return target * rate
