# %% [markdown]
# # 01 · Reliability: faults, retries, backoff and jitter
#
# DDIA's chapter 1 asks for systems that "continue to work correctly even when things go wrong".
# The cheapest tool for that is the retry: if a call fails, try it again. This notebook is
# about why the retry works, when it makes things worse, and the small details (how long to
# wait, how to randomise the wait, how many times to try, when to stop) that decide which.
#
# **In this notebook you will**
#
# 1. tell a *fault* from a *failure*, and see a retry turn transient faults into successes;
#    meet DDIA's three kinds of fault, and see why redundancy beats independent hardware faults
#    and does nothing against a fault that every replica shares;
# 2. compare exponential backoff with the four jitter strategies of the AWS post "Exponential
#    Backoff and Jitter", on sliders;
# 3. watch a thundering herd form after an outage, and jitter break it up;
# 4. rerun the AWS contention experiment: work and completion time per strategy;
# 5. count how retries multiply across layers, and cap them with a retry budget;
# 6. see why a retried operation must be idempotent;
# 7. do the same against the live Atlas service, and compare the numbers with the simulation.

# %% [markdown]
# ## Faults are not failures
#
# DDIA (chapter 1, "Reliability") draws a line between two words. A **fault** is one
# component deviating from its spec: a dropped packet, a process that pauses, a disk that
# returns an error. A **failure** is the system as a whole no longer giving the required
# service to its user. Faults cannot be prevented; reliability is the craft of keeping them
# from becoming failures.
#
# Many faults are *transient*: the same call a moment later works. For those a retry is a
# fault-tolerance mechanism in one line of code. But a retry is also more work sent to a
# system that may be failing precisely because it has too much work. Everything in this
# notebook follows from that tension.

# %%
SEED = 2024

# %%
import matplotlib.pyplot as plt
import pandas as pd

from atlas_sim import (
    Backoff,
    BudgetConfig,  # noqa: F401 (the live section invites `budget = BudgetConfig()`)
    ClientPolicy,
    Fault,
    Load,
    RetryBudget,
    RetryPolicy,
    Settings,
)
from atlas_sim.analysis import (
    plot_call_timeline,
    plot_comparison,
    plot_timeseries,
    summary_table,
)
from atlas_sim.exercises import check
from atlas_sim.experiments import faults, live, retries
from atlas_sim.policies import JITTER_STRATEGIES
from atlas_sim.sim import simulate
from atlas_sim.sim.scenarios import retry_storm, thundering_herd

# %% [markdown]
# ## Three kinds of fault
#
# DDIA ("Reliability") sorts faults into three kinds, and each calls for its own defence.
#
# **Hardware faults** are many and independent. Disks have a mean time to failure (MTTF) of
# about 10 to 50 years, so a cluster of 10,000 disks loses about one a day, and a disk's death
# says nothing about its neighbour's. Large operators' published fleet statistics say the same
# in another unit: an annualised failure rate of about 1-2% a year. Such faults are fought with
# redundancy: a second copy is unlikely to die while the first is being replaced.
#
# **Predict before you run.** 10,000 disks with an MTTF of 30 years, each replaced within a day:
# how many fail per day, and how many are dead at the same moment on a typical day?

# %%
# NBVAL_CHECK_OUTPUT
faults.fleet_table(10_000, mttf_years=30, repair_days=1, seed=SEED)

# %% [markdown]
# A year of the fleet, simulated, beside the long-run formulas: `n / (MTTF + MTTR)` failures a
# day, and at any moment Binomial(`n`, `MTTR / (MTTF + MTTR)`) disks down. These hold whatever
# the distribution of a disk's lifetime (the renewal theorem), but only for a fleet that has run
# long enough for its disks to be of every age, some new and some old. The simulated fleet is
# such a one: each disk starts the year at the age a long-running fleet would give it, so the
# formulas hold from the first day. Move the sliders.
#
# The Weibull shape sets how a disk ages: 1 is a disk that never ages (exponential lifetimes),
# above 1 wears out, below 1 is infant mortality (a disk that survives its first months is
# likely to last). Only a fleet of every age is
# indifferent to it. Buy 10,000 wear-out disks (shape 4, MTTF 30 years) on one day, and their
# first two years see almost no failures at all, against 0.91 a day in the long run: most of
# them die between years 15 and 45, in a wave, and the fleet settles to the long-run rate only
# after several such lifetimes, as replacements spread out in age. That is why real fleets report
# failure rates by drive age, and why a long-run rate says nothing about a new batch.

# %%
# NBVAL_IGNORE_OUTPUT
faults.fleet_panel(seed=SEED)

# %% [markdown]
# **Software errors** are the opposite: systematic and correlated. One bad input, one leap
# second, one runaway process hits every node that runs the same code at the same time. Copies
# do not help, because they fail together. The next table puts both kinds on replicas of some
# data: each replica fails now and then on its own (MTTF 500 days, 5 days to repair), and, once
# a decade, a fault they all share (a rack, a power feed, a bad software release) takes every
# replica down at once. Data is lost when every replica is down at the same moment.
#
# **Predict before you run.** Against the independent faults, how much does a third replica
# buy over a second? Against the shared one?

# %%
# NBVAL_CHECK_OUTPUT
redundancy = faults.redundancy_table(3, mttf_days=500, repair_days=5, shared_per_decade=1,
                                     seed=SEED)
redundancy

# %% [markdown]
# The theory columns are exact (a Markov chain over the number of replicas down); the
# simulation checks one of them. Each further replica cuts the independent risk by a large
# factor: about `MTTF / MTTR × r / (r + 1)` when it joins `r` others, so 67 from two replicas to
# three and 81 from four to five here (MTTF / MTTR = 100); from one to two only 37, because one
# replica's risk, 52% in a year, is already close to certain. The shared fault's risk does not
# move past the second replica, because it never needed more than one event. Redundancy is a defence against *independent* faults only. Try the
# sliders: no replica count beats a shared fault rate.

# %%
# NBVAL_IGNORE_OUTPUT
faults.redundancy_panel(seed=SEED)

# %% [markdown]
# **Human errors**, DDIA reports from a study of large internet services, caused more outages
# than hardware faults: configuration mistakes by operators above all. Neither retries nor
# replicas help: a wrong configuration pushed everywhere is a shared fault of the worst kind.
# The chapter's remedies are tooling and process: interfaces that make the right thing easy,
# sandboxes to try things in, thorough testing, quick rollback, gradual rollouts that expose a
# change to a few users first, and telemetry that shows early that something is wrong. A later
# notebook (operability) rolls a bad change out to a canary and watches its error budget burn.
#
# The rest of this notebook is about the one fault a retry *can* absorb: the transient one.

# %% [markdown]
# ## Why retry
#
# A server's handler fails 10% of the time, transiently and independently (a flaky network
# hop, a dependency that hiccups). Clients retry failed calls after a short backoff.
#
# **Predict before you run.** With one attempt, 10% of requests fail. With two? With three?
# And how many attempts per request will the server see?

# %%
# NBVAL_CHECK_OUTPUT
attempts = {f"{n} attempt(s)": retries.transient_errors(0.1, n, seed=SEED) for n in (1, 2, 3)}
summary_table(attempts, digits=2, units=True, columns=["requests", "error_rate", "amplification"])

# %% [markdown]
# Each extra attempt divides the error rate by ten: a request now fails only if *every*
# attempt fails, 0.1 × 0.1 × 0.1 = 0.1%. The cost is small, about 1.11 attempts per request,
# because only the failures are retried.
#
# That arithmetic assumes independent faults. When a server fails *because* it is overloaded
# or down, the next attempt fails for the same reason, and each retry adds load to the very
# thing that is struggling. The rest of this notebook is about that case.

# %% [markdown]
# ## Exponential backoff and jitter
#
# Retrying at once hammers a server that just said no. **Exponential backoff** waits longer
# after each failure: before its *k*-th retry (k = 1, 2, ...) a client waits up to
# `ceiling(k) = min(cap, base × multiplier^(k−1))`.
#
# Two bases appear in this workbook. The client experiments here use `Backoff()`, whose base is
# 100 ms, doubling: 100 ms, 200 ms, 400 ms, ... The live service's own setting,
# `RETRY_MIN_WAIT`, is 1 s: 1 s, 2 s, 4 s, ... The reference card (`docs/reference-card.md`)
# states both, with their units.
#
# The AWS Architecture Blog's "Exponential Backoff and Jitter" then asks how to randomise the
# wait:
#
# | strategy | wait before retry *k* | |
# |---|---|---|
# | `none` | `ceiling(k)` | every client waits exactly the same |
# | `full` | `uniform(0, ceiling(k))` | AWS's recommendation |
# | `equal` | `ceiling(k)/2 + uniform(0, ceiling(k)/2)` | never very short |
# | `decorrelated` | `min(cap, uniform(base, previous × 3))` | grows from its own last wait |
#
# The panel draws the waits of 200 clients. Left: each dot is one client's wait before one
# retry; the red steps are the exponential ceiling (decorrelated jitter does not follow it: it
# grows by up to three times its previous wait, up to the cap). Right: when all those retries
# go out, if every client failed at t = 0. The cap starts at 2 s, so it clips the last retries
# (their ceiling would be 3.2 s): move it to see where it bites.
#
# **Predict before you run.** With `none`, what will the right-hand picture look like? And with
# `full`?

# %%
# NBVAL_IGNORE_OUTPUT
retries.backoff_panel(seed=SEED)

# %% [markdown]
# With `none` the right-hand picture is a few spikes: 200 clients who failed together retry
# together, again and again. Every jittered strategy turns the spikes into a spread. Mean waits
# per retry for the default settings (base 100 ms, doubling, cap 10 s):

# %%
# NBVAL_CHECK_OUTPUT
waits = {j: retries.backoff_waits(Backoff(jitter=j), retries=6, seed=SEED) for j in JITTER_STRATEGIES}
means = pd.DataFrame({j: w.groupby("retry")["wait"].mean() for j, w in waits.items()})
means.round(3).rename_axis(columns="mean wait (s)")

# %% [markdown]
# Full jitter waits, on average, half as long as no jitter; equal jitter three quarters as
# long. Decorrelated jitter ignores `multiplier` and grows by its own factor of three.

# %% [markdown]
# ## The thundering herd after an outage
#
# 200 clients reconnect at the same instant, as they do after a network partition heals, and
# find the server down for 2 s. They retry with exponential backoff (100 ms doubling, capped at
# 5 s, 8 attempts). The server has 4 workers and room for 20 requests; above that it sheds with 429,
# which clients also retry. A client that got its answer goes on polling every 5 s or so, so
# over the 20 s of the run the table counts several requests per client.
#
# **Predict before you run.** Without jitter, what happens when the server comes back at 2 s?
# How many of the 200 clients can it take at once, and what do the others do next?

# %%
herd = {f"jitter={j}": simulate(thundering_herd(jitter=j, seed=SEED)) for j in ("none", "full")}

# %%
# NBVAL_CHECK_OUTPUT
retries.herd_table(herd)

# %%
retries.plot_herd(herd)
plt.show()

# %% [markdown]
# Without jitter the clients stay in lock step: every retry wave leaves at 0.1, 0.3, 0.7, 1.5,
# 3.1, 6.3 and 11.3 s (the last wait is the 5 s cap, not 6.4 s). When the server returns, a
# wave of 200 meets room for 20; 180 are shed, and those 180 come back together again 3.2 s
# later. Backoff spaced the retries out in time, but not the clients out from each other.
#
# With full jitter the same retries arrive as a trickle the server absorbs: the peak rate
# after the outage is more than ten times lower and almost no request fails. (The table's
# "peak attempts/s after" is the highest bar right of the shaded outage: both count in 100 ms
# bins, shown per second.)
#
# Try the panel: more clients, a longer outage, another strategy, a larger base.

# %%
# NBVAL_IGNORE_OUTPUT
retries.herd_panel(seed=SEED)

# %% [markdown]
# ## The AWS contention experiment
#
# The AWS post measured jitter on a different problem: 100 clients each want to update one
# shared record once, with optimistic concurrency (read the version, write "if the version is
# unchanged"). Racing clients conflict; the losers back off and retry. Every message crosses a
# network that takes 10 ms ± 2 ms. Two numbers per strategy: **work** (write calls the server
# handled) and **completion time** (when the last client succeeded).
#
# **Predict before you run.** Which strategy does the least work? Which finishes first?
# Where does plain exponential backoff (`none`) land?

# %%
# NBVAL_CHECK_OUTPUT
contention = retries.contention_vs_post(seeds=range(SEED, SEED + 20)).round(1)
contention

# %%
plot_comparison(contention, ["write calls", "completion time (s)"], title="100 clients, mean of 20 runs")
plt.show()

# %% [markdown]
# This is the post's experiment, reproduced: the columns marked "(post)" are the means of the
# post's own simulator (5000 runs each), and Atlas's means over 20 seeds sit within their
# sampling error (a test checks this over 400 seeds). One detail of that simulator moves its
# numbers: its client counts the failed attempt before it backs off, so the first wait's
# ceiling is 10 ms, twice the 5 ms base. Atlas does the same here; counting from 0, as
# `Backoff` does elsewhere in Atlas, full jitter would do about 10% more work (876 write calls
# instead of 796). Atlas differs on purpose only where the numbers do not move: times in
# seconds, and network delays and jitter drawn from separate seeded streams rather than one
# shared generator, so that a seed gives the same run on any machine.
#
# No backoff finishes quickly but does three times the work of full jitter: the server pays
# for every collision. Plain exponential backoff is the worst of both: clients that collided
# together wait the same time and collide again, until they all sit at the 2 s cap; completion
# takes about a minute. Full jitter does the least work, with equal jitter close behind;
# decorrelated jitter finishes about as soon for some 25% more work. (At other numbers of
# clients equal or decorrelated jitter sometimes edges ahead by a few calls: try the panel.)
# The timelines show why jitter wins:

# %%
plot_call_timeline(retries.contention_timelines(100, seed=SEED), bin_width=0.01, until=1.5)
plt.show()

# %% [markdown]
# Plain backoff sends its calls in clusters (the herd again); full jitter smooths them into a
# steady stream. The panel reruns the comparison for other numbers of clients:

# %%
# NBVAL_IGNORE_OUTPUT
retries.contention_panel(seed=SEED)

# %% [markdown]
# ## Retry amplification across layers
#
# Real requests cross several services. If each layer retries, the attempts multiply: with
# `a` attempts per layer and `L` layers, one user request can become `a^L` calls at the
# bottom. The SRE book (chapter 22, "Addressing Cascading Failures") gives the example of 4
# attempts over 3 layers.
#
# **Predict before you run.** How many calls reach the database in that example?

# %%
# NBVAL_CHECK_OUTPUT
calls = pd.DataFrame({layers: {a: retries.retry_amplification(a, layers) for a in (2, 3, 4, 5)}
                      for layers in (1, 2, 3, 4)})
calls.rename_axis(index="attempts per layer", columns="calls at the bottom, by layers")

# %% [markdown]
# 64. In practice: retry at one layer only (usually the one closest to the user), and make the
# others fail fast.

# %% [markdown]
# ## Retry budgets
#
# A budget caps the extra load retries can add. gRPC's retry throttling keeps a token count:
# it starts at `max_tokens`, each failed attempt costs 1, each success earns `token_ratio`, and
# retries are allowed only while more than half the tokens are left. In a healthy system the
# budget never gets in the way; in a sustained failure retries stop, and only first attempts go
# out.
#
# The experiment: a server at 60% utilisation whose dependency fails 90% of calls for 10 s.
# Clients retry up to 4 times.
#
# **Predict before you run.** Without a budget, what happens to the load on the server during
# the burst, and to latency? With a budget, what happens to the error rate?

# %%
# NBVAL_CHECK_OUTPUT
burst = {name: retries.error_burst(budget=flag, seed=SEED)
         for name, flag in (("no budget", False), ("budget", True))}
summary_table(burst, digits=3, units=True, columns=["p50", "p99", "error_rate", "amplification"])

# %%
plot_timeseries(burst["no budget"], 0.5, title="Error burst from 10 s to 20 s, no budget")
plt.show()

# %% [markdown]
# Without a budget the retries multiply the load during the burst: the server, at 60%
# utilisation, is pushed past 100%, a queue builds, and *every* request, failing or not,
# waits seconds (a p99 of about 9 s) until long after the burst. With the budget, retries stop
# within a few failures: many more requests fail (22% against 4% over the whole run: they
# would have needed those retries), but the server stays healthy and latency hardly moves.
# That is the trade: a budget gives up success during a crisis to keep the crisis from
# turning into an outage for everyone.
#
# When does the budget let retries through again? Each success earns `token_ratio`, each
# failure costs 1, so the tokens grow only while the failure share *p* satisfies
# `(1 − p) × token_ratio > p`, that is `p < token_ratio / (1 + token_ratio)`: 9% with gRPC's
# 0.1. In the panel, set the errors during the burst to 0.3 and move `token_ratio` from 0.05
# to 1: at 1 nearly every request is saved by its retries. At 0.9, no ratio helps.

# %%
# NBVAL_IGNORE_OUTPUT
retries.budget_panel(seed=SEED)

# %% [markdown]
# ## Retries need idempotent operations
#
# A client that times out does not know whether the server did the work. If it retries, the
# server may do it twice. That is harmless for a read, and for "set the balance to 10"; it is
# a bug for "add 10 to the balance" or "charge the card". DDIA discusses this under
# *idempotence* (chapter 11, "Fault Tolerance") and *operation identifiers* (chapter 12, "The
# end-to-end argument for databases"): give each logical request a unique ID, and have the
# server remember which IDs it has already applied. HTTP has a header for it, from the IETF
# draft "The Idempotency-Key HTTP Header Field": the client picks a key per logical request
# and sends the same key with every attempt. (Atlas's `X-Request-ID` is not one: it names one
# attempt for tracing, a retry gets a new one, and nobody remembers it.) The live section
# below retries a write with and without a key.
#
# The simulator keeps the server's own log of completed work, including work for clients who
# had already given up. In the retry storm of notebook 02 (1 s client timeout, 4 attempts):
#
# **Predict before you run.** How many times does the server do the work of a typical request?

# %%
# NBVAL_CHECK_OUTPUT
executions = retries.executions_per_request(simulate(retry_storm("none", seed=SEED)))
executions.value_counts().sort_index().rename_axis("times executed").rename("requests")

# %% [markdown]
# Most requests were executed four times, each time for a client that had stopped listening.
# For a non-idempotent operation, every one of those is a duplicate effect.

# %% [markdown]
# ## Live: the same policy against the real service
#
# Now the real thing. The next cell starts the Atlas service inside this kernel: FastAPI under
# uvicorn, on 127.0.0.1, on a port the operating system picks. Its `/api/compose` handler calls
# a stand-in for the database through the full middleware stack. Here the handler does not
# retry (`RETRY_MAX_ATTEMPTS=1`): the retries are yours, on the client.

# %%
# NBVAL_IGNORE_OUTPUT
settings = Settings(retry_max_attempts=1, circuit_breaker_failure_threshold=50,
                    circuit_breaker_recovery_timeout=2.0)
server = live.start_service("atlas-01", settings=settings, seed=SEED)
server

# %% [markdown]
# The experiment: a fault makes 30% of the dependency's calls fail (switched on through the
# service's `/admin/faults` before the first request), and the load generator sends 50
# requests/s for 10 s, open loop, with the client policy below. The same three objects, the
# `Load`, the `ClientPolicy` and the `Fault`, describe the simulated run: same seed, same
# arrival times and the same coin flips in the dependency.
#
# **Predict before you run.** With 3 attempts, what error rate, and how many attempts per
# request? Then edit the next cell and run it and the two after it again: `max_attempts=1`,
# `max_attempts=5`, or a retry budget, `budget = BudgetConfig()` (gRPC's defaults, 10 tokens
# and a ratio of 0.1, from the section on retry budgets). The theory row follows your edit.
# (If you ran the whole notebook, its last cell has stopped the service: run the cell that
# starts it first.)

# %%
policy = RetryPolicy(max_attempts=3, backoff=Backoff(base=0.05, cap=1.0, jitter="full"))
budget = None  # or BudgetConfig(max_tokens=10, token_ratio=0.1)
client = ClientPolicy(timeout=2.0, retry=policy, budget=budget)
setup = dict(load=Load(rate=50.0, duration=10.0), client=client,
             faults=[Fault(start=0.0, dependency_error_rate=0.3)], seed=SEED)

# %%
# NBVAL_IGNORE_OUTPUT
runs = live.compose_experiment(server, settings, **setup)
table = live.retry_table(runs, error_rate=0.3, client=client)
table

# %% [markdown]
# One run is one sample: in 10 s only a dozen or so of the 500 requests fail, so each error
# rate carries binomial noise. The interval columns say how much (Wilson's 95% interval for
# that many failures in that many requests). Does theory fall inside the live run's interval?

# %%
# NBVAL_IGNORE_OUTPUT
live.theory_verdict(table)

# %% [markdown]
# Theory says about 0.3 × 0.3 × 0.3 = 2.7% of requests fail, at about 1 + 0.3 + 0.09 = 1.39
# attempts each. With intervals this wide, the simulated and live rates can differ by half of
# themselves while both are right; amplification, counted over every request, is much
# steadier. One run cannot settle more than that: `tools/live_retry_check.py` repeats the
# experiment over ten seeds (about 5,000 requests), where live and simulated failures each
# land within two standard errors of theory.
#
# With the budget, theory changes regime. Its tokens fall by 0.3 − 0.1 × 0.7 = 0.23 per attempt
# at this error rate (above the balance point 0.1 / 1.1 = 9% of the section on budgets), so
# after about the first 16 requests retries stop for good, and the error rate is nearly the
# dependency's own 30%: the table's theory row says so, and the verdict names the case. A
# budget close to its balance point (try `BudgetConfig(token_ratio=0.4)` with this 30%) has
# no closed form here: the theory row is then empty and the verdict says so.
#
# Set `max_attempts=1` and run again: now the two error rates are identical. With the same
# seed, the service's dependency flips the same coins as the simulated one, call for call, and
# almost always for the very same requests (two sent within a millisecond may swap). With
# retries, they stop doing so: the dependency hands out its coins in the order calls reach
# it, and a retry reaches it after a real round trip and a jittered wait, so a retry and a new
# request a millisecond apart can arrive in either order, swap coins, and reshuffle every
# call after them. The two worlds become two samples of the same process.
#
# (The latencies, not shown here, do not agree yet: the model knows nothing of HTTP, which
# adds a few milliseconds to every request. Notebook 02 measures that and puts it into the
# model.)

# %% [markdown]
# One check before trusting any live latency: an open-loop generator must send each request
# at its scheduled time. If the machine is busy it falls behind, and the latencies it reports
# then include the time requests waited to be sent. The run records that lag:

# %%
# NBVAL_IGNORE_OUTPUT
live.generator_note(runs["live"])

# %% [markdown]
# ### A retried write, with and without an idempotency key
#
# The service's `POST /api/orders` places an order: 0.1 s of work, then one more order
# applied. Our client gives up after 0.05 s and tries again, up to four times, so every
# attempt times out while the server is still at work. Without a key, the server cannot tell
# a retry from a new order. With one, it remembers the key: a retry that arrives while the
# first attempt is still at work gets 409 (try later), and one that arrives after gets the
# first attempt's answer again, replayed, with nothing applied.
#
# **Predict before you run.** Twenty orders: how many does the service apply each way, and
# how many does the client see succeed?

# %%
# NBVAL_IGNORE_OUTPUT
live.idempotency_table(server, seed=SEED)

# %% [markdown]
# Without a key, every attempt was an order, and the client saw none of them succeed: the
# worst of both. With a key, each order was applied once and every client got its answer,
# after a few more attempts. The key costs the server a little memory per request (Atlas
# keeps keys for five minutes); it is what makes retrying a write safe.

# %% [markdown]
# ### A fault every instance shares
#
# Back to DDIA's second kind of fault. Real services run several instances of the same code,
# and a client that gets an error often retries on another one. That works against a fault that
# strikes one attempt at random (a flaky disk, a dropped packet): the next attempt is a new
# coin. It does nothing against a software error that every instance shares, such as a bug
# that crashes the handler on one particular input: the input travels with the request, so
# every instance it reaches runs the same code and crashes the same way.
#
# The next cell starts two more instances of the service beside `server` (same settings, each
# its own port and random streams). The client sends each request to the next instance in
# turn and makes up to three attempts, each retry going to the next instance. Two faults, one
# at a time, with the same `Fault` objects in both worlds: the dependency fails 20% of calls at
# random, or the handler crashes on 5% of inputs (`Fault(bad_input_rate=0.05)`, switched on in
# all three instances, as a bad release would be).
#
# **Predict before you run.** With three attempts, what share of requests fail under each
# fault? How many crashes do the instances log for one bad request?

# %%
# NBVAL_IGNORE_OUTPUT
instances = [server, *live.start_instances(server, 2)]
[instance.url for instance in instances]

# %%
# NBVAL_IGNORE_OUTPUT
shared = live.shared_fault_experiment(instances, settings, seed=SEED)
live.shared_fault_table(shared, error_rate=0.2, bad_input_rate=0.05, attempts=3)

# %% [markdown]
# Retries on other instances rescue almost every request from the random fault (theory: 0.2³ =
# 0.8% fail) and none from the bad input: each of those requests fails three times, on three
# instances, and the simulated and live runs fail on exactly the same requests, because each
# request carries the same input in both worlds. Worse, every retry of a bad input is one more
# crash, and the instances log three tracebacks per request, a flood of alarms for one cause.
# Replicas and retries are the answer to independent faults; a shared one needs what the
# section on human errors listed: testing, a gradual rollout that exposes the new version to
# a few requests first, and a quick rollback.

# %% [markdown]
# ## Exercises
#
# **Exercise 1.** A handler fails 20% of the time, independently. With 4 attempts, what share
# of requests fails? Give a number (e.g. `0.05`, `"5%"` or `1/20`).

# %%
answer_1 = ...

# %%
check(answer_1, 0.2**4, rel=0.01, hint="a request fails only if all 4 attempts fail")

# %% [markdown]
# **Exercise 2.** In the thundering-herd experiment, which jitter strategy gives the lowest
# peak attempt rate once the server is back? Give its name (`"none"`, `"full"`, `"equal"` or
# `"decorrelated"`). Use `retries.herd_panel(seed=SEED).update(jitter=...)` to find out.

# %%
answer_2 = ...

# %%
peaks = {j: retries.herd_panel(seed=SEED).update(jitter=j).table["peak attempts/s after"].iloc[0]
         for j in JITTER_STRATEGIES}
check(answer_2, min(peaks, key=peaks.get), choices=JITTER_STRATEGIES,
      hint="compare the 'peak attempts/s after' column")

# %% [markdown]
# **Exercise 3.** A budget with `max_tokens=10` and `token_ratio=0.1` starts full. How many
# failures in a row (no successes) does it take before it refuses retries?

# %%
answer_3 = ...

# %%
budget = RetryBudget(max_tokens=10, token_ratio=0.1)
failures = 0
while budget.can_retry():
    budget.record_failure()
    failures += 1
check(answer_3, failures, hint="retries stop once tokens <= max_tokens / 2")

# %% [markdown]
# **Exercise 4.** A request crosses 4 layers and each retries up to 3 attempts. In the worst
# case, how many calls reach the bottom layer?

# %%
answer_4 = ...

# %%
check(answer_4, retries.retry_amplification(3, 4), hint="attempts per layer to the power of layers")

# %% [markdown]
# **Exercise 5.** A fleet of 20,000 disks, each with an MTTF of 40 years and replaced within a
# day. How many disks fail per day, in the long run? Give a number to two significant figures
# or more (e.g. `1.2` or `"1.2 a day"`).

# %%
answer_5 = ...

# %%
check(answer_5, 20_000 / (40 * 365 + 1), rel=0.02, unit="/day", hint="n / (MTTF + MTTR), in days")

# %% [markdown]
# **Exercise 6.** In the redundancy table (MTTF 500 days, 5 days to repair, a shared fault
# once a decade), what does a third replica do to the chance of losing the data in a year,
# against the second? Give the letter, e.g. `"a"`:
#
# * `"a"`: it divides it by tens, as it divides the risk from independent faults;
# * `"b"`: it hardly changes it;
# * `"c"`: it doubles it.

# %%
answer_6 = ...

# %%
with_shared = redundancy["with the shared fault, theory"].str.rstrip("%").astype(float)
ratio = with_shared[3] / with_shared[2]
effect = "a" if ratio < 0.05 else ("b" if ratio < 1.5 else "c")
check(answer_6, effect, choices=["a", "b", "c"],
      hint="read the column 'with the shared fault, theory' for 2 and 3 replicas")

# %% [markdown]
# **Exercise 7.** An operator's configuration change took down every instance of a service at
# once. Which defence would have limited the damage most? Give the letter:
#
# * `"a"`: more client retries, with jitter;
# * `"b"`: a gradual rollout (a canary first), with quick rollback;
# * `"c"`: a third replica of every instance.

# %%
answer_7 = ...

# %%
check(answer_7, "b", choices=["a", "b", "c"],
      hint="the change is a fault every instance shares: what stops it reaching all of them?")

# %% [markdown]
# **Exercise 8.** The handler crashes on 4% of inputs, on every instance, and clients make up to
# five attempts, each on the next of three instances. What share of requests fail (theory)?

# %%
answer_8 = ...

# %%
check(answer_8, 0.04, rel=0.01,
      hint="a bad input fails on every attempt, wherever it goes: retries change nothing")

# %% [markdown]
# ## Recap
#
# * A fault is a component misbehaving; a failure is the user not being served. Hardware faults
#   are independent and beaten by redundancy (each replica divides the risk); software errors
#   and human errors are shared, and no number of replicas helps: testing, gradual rollouts,
#   quick rollback and telemetry do.
# * Retries turn *transient, independent* faults into successes at little cost; against a fault
#   every instance shares (a bad input that crashes the same code everywhere) they only
#   multiply the crashes.
# * Exponential backoff spaces retries out in time; only **jitter** spaces *clients* out from
#   each other. Without it, synchronised clients form a thundering herd that a recovering
#   server cannot absorb. In the AWS experiment full jitter does the least work, with equal
#   jitter close behind.
# * Retries multiply across layers (`attempts^layers`) and add load exactly when a system is
#   struggling. A **retry budget** caps that amplification: it gives up success during a
#   crisis to keep the crisis from becoming an outage for everyone.
# * A retry may repeat work whose answer was lost: retried operations must be idempotent, or
#   carry an idempotency key, one per logical request and the same on every attempt, that the
#   server remembers to suppress duplicates (a tracing ID such as `X-Request-ID` is not one).
#
# **Next:** `02_reliability_breakers_timeouts.ipynb`: circuit breakers, timeouts, shedding and
# the retry storm.
#
# ## References
#
# * M. Kleppmann, *Designing Data-Intensive Applications*: chapter 1, "Reliability"; chapter 8,
#   "Unreliable Networks" ("Timeouts and Unbounded Delays"); chapter 11, "Fault Tolerance"
#   ("Idempotence"); chapter 12, "The end-to-end argument for databases".
# * M. Brooker, "Exponential Backoff and Jitter", AWS Architecture Blog, 2015.
# * Backblaze, "Hard Drive Stats" (yearly reports of annualised failure rates).
# * S. M. Ross, *Introduction to Probability Models*, chapter 7 (alternating renewal processes).
# * B. Beyer et al. (eds.), *Site Reliability Engineering*, chapter 21, "Handling Overload",
#   and chapter 22, "Addressing Cascading Failures".
# * gRPC, "Retry design" (gRFC A6): retry throttling with `maxTokens` and `tokenRatio`.

# %% [markdown]
# Finally, stop the live service (running its cell again starts it again), and check that it
# left nothing behind in this kernel: no server, no thread.

# %%
for instance in instances[1:]:  # the two instances started beside it
    instance.stop()
server.stop()
left = live.leftovers()
print(f"{server}; still running in this kernel: {left or 'nothing'}")
assert not left, left
