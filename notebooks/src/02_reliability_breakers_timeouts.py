# %% [markdown]
# # 02 · Reliability: circuit breakers, timeouts, shedding and retry storms
#
# Notebook 01 showed retries turning transient faults into successes, and their cost. This one
# is about the faults that are not transient: a dependency that stops answering, a server that
# receives more work than it can do. Here the question is not "how do we try again" but "how
# do we stop a fault in one place from becoming a failure everywhere" (DDIA chapter 1,
# "Reliability").
#
# **In this notebook you will**
#
# 1. drive the circuit-breaker state machine (consecutive and failure-rate modes, half-open
#    probes) and watch it fail fast through a dependency outage;
# 2. see the pile-up of waiting requests that a breaker prevents, and why counting errors alone
#    makes the breaker look worse than it is;
# 3. choose a timeout from a latency percentile, and predict its false-timeout rate;
# 4. tell 504 from 429 from 503, and use load shedding against an overload spike;
# 5. provoke a retry storm (a metastable failure) and find out which mechanisms pull the
#    system out of it, and which do not;
# 6. inject the same outage into the live service and plot its breaker beside the simulated one.

# %%
SEED = 2024

# %%
import httpx
import matplotlib.pyplot as plt
import pandas as pd

from atlas_sim import BreakerConfig, ClientPolicy, Fault, Load, Settings
from atlas_sim.analysis import plot_breaker_timelines, plot_breaker_trace, plot_timeseries
from atlas_sim.exercises import check
from atlas_sim.experiments import breakers, live
from atlas_sim.scripted import drive_breaker
from atlas_sim.sim import simulate
from atlas_sim.sim.scenarios import full_stack, retry_storm
from atlas_sim.workload import Distribution

# %% [markdown]
# ## The circuit breaker's two ways of counting
#
# A breaker opens when the dependency looks broken. "Looks broken" can be counted two ways, as
# Resilience4j offers: `failure_threshold` failures **in a row** (one success resets the count),
# or a **failure rate** over the last `window_size` calls. The first reacts to hard outages; the
# second also catches a dependency that fails often but never many times in a row.
#
# Here is a script of one call a second: the dependency is healthy, then fails 60% of calls
# (never four in a row) from t = 10 s, then is down from t = 30 s to t = 40 s.
#
# **Predict before you run.** Which breaker opens first: 5 in a row, or 50% over 10 calls?

# %%
script = [(float(t), not ((10 <= t < 30 and t % 5 >= 2) or 30 <= t < 40)) for t in range(60)]
modes = {"5 in a row": BreakerConfig(failure_threshold=5, recovery_timeout=5.0),
         "50% of 10": BreakerConfig(mode="failure_rate", window_size=10, minimum_calls=10,
                                    failure_rate_threshold=0.5, recovery_timeout=5.0)}
traces = {name: drive_breaker(config, script) for name, config in modes.items()}

# %%
# NBVAL_CHECK_OUTPUT
pd.DataFrame.from_dict({name: {"first open at (s)": t.first("open"),
                              "calls rejected": int((t.calls["outcome"] == "rejected").sum())}
                       for name, t in traces.items()}, orient="index")

# %%
fig, axes = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True, layout="constrained")
for ax, (name, trace) in zip(axes, traces.items(), strict=True):
    plot_breaker_trace(trace, ax).set_title(name, fontsize="medium")
axes[0].set_xlabel("")
plt.show()

# %% [markdown]
# The consecutive breaker sleeps through the flaky period (never five failures in a row) and
# opens only in the hard outage. The rate breaker opens during the flaky period, then keeps
# probing: each probe is one call, and a single failed probe sends it back to open.

# %% [markdown]
# ## A dependency outage, with and without a breaker
#
# Now the breaker under real load (simulated). 50 requests/s reach 10 workers; half the
# requests also call a dependency (10 ms, 1 s timeout). From t = 10 s to t = 25 s the
# dependency hangs: it stops answering, as a database that lost its disk does.
#
# **Predict before you run.** Without a breaker, what happens to the half of the requests
# that never call the dependency? With one, what happens to the error rate? (The table shows
# the requests sent during the outage.)

# %%
outage = breakers.outage_comparison(seed=SEED)

# %%
# NBVAL_CHECK_OUTPUT
breakers.outage_table({name: run.window(10.0, 25.0) for name, run in outage.items()})

# %%
breakers.plot_outage_pile_up(outage)
plt.show()

# %% [markdown]
# Without a breaker, every doomed call holds a worker until it times out. Ten workers cannot
# hold 25 calls a second for up to a second each, so a queue forms, and the *healthy* half of
# the traffic waits in it too: its median latency goes from 10 ms to seconds, and many
# requests get 504 from the server's own 3 s timeout. A fault in one dependency has become a
# failure of the whole service.
#
# With a breaker, after five failures calls fail at once with 503. The workers stay free, and
# the healthy half is served in milliseconds throughout: about half the requests are answered
# well (a success within 200 ms, the default SLO's latency) against almost none without the
# breaker.
#
# Two columns say otherwise, and both are worth reading. The error rate is *higher* with the
# breaker: it refuses calls that a long wait might have saved. And the **goodput**, the
# successful requests per second however late they come, is higher without it: the healthy
# half still gets its answers there, seconds late. A user who gave up after a second does not
# count a four-second success as one; the last column, goodput within 200 ms, counts only
# answers in time, and there the breaker wins by a factor of forty. Counted in errors or in raw
# goodput the breaker looks worse; counted in requests answered well it wins. Choose your
# metric before you choose your mechanism.
#
# The panel puts every breaker setting on a slider; its table shows the requests sent during
# the outage. It leaves out the error rate and the raw goodput on purpose: every call to a
# dependency that hangs fails, whatever the breaker does, so those two hardly move. What the
# settings change is how soon the breaker opens and how much the probes cost: watch p99 and
# the answers within 200 ms. Try a high threshold, a long recovery timeout, several half-open
# probes, the failure-rate mode. (The breaker's sliders act only while the breaker is on.
# "Successes to close" matters when a recovering dependency is still flaky; this one recovers
# at once, so the first successes close it whatever the threshold.)

# %%
# NBVAL_IGNORE_OUTPUT
breakers.breaker_panel(seed=SEED)

# %% [markdown]
# ## Choosing a timeout
#
# A timeout is a guess at "this will never answer". DDIA (chapter 8, "Timeouts and Unbounded
# Delays") warns that there is no right value: too long and users wait for nothing, too short
# and healthy-but-slow requests are cut off. A common rule is to set it at a high percentile of
# the latency you observe when healthy. A timeout at the percentile *q* (the p99 is q = 0.99)
# cuts off the slowest 1 − *q* of healthy requests: its false-timeout rate is 1 − *q*.
#
# **Predict before you run.** A timeout at the p99 of healthy latency cuts off what share of
# healthy requests? At the p99.9?

# %%
# NBVAL_CHECK_OUTPUT
breakers.timeout_table(seed=SEED)

# %% [markdown]
# As predicted: the timeout at the p99 cuts off 1% of requests that would have succeeded,
# the one at p99.9 one in a thousand. With retries, each false timeout costs an extra attempt;
# without, it is an error. And the p99 moves with load (queueing) and with the tail of the
# work: drag the tail slider and watch the percentiles spread.

# %%
# NBVAL_IGNORE_OUTPUT
breakers.timeout_panel(seed=SEED)

# %% [markdown]
# ## 504, 429, 503: three ways to say no
#
# | status | who decides | meaning | should the client retry? |
# |---|---|---|---|
# | **504** Gateway Timeout | the server's own timeout (`HTTP_TIMEOUT`) | "I took too long; I dropped the work" | maybe, later: the server is slow |
# | **429** Too Many Requests | load shedding (`LOAD_SHEDDING_MAX_CONCURRENT`) | "I am full; I did not start your work" | yes, after backing off (`Retry-After`) |
# | **503** Service Unavailable | a dependency's breaker, or a server that is down | "something I need is broken" | yes, later; it will not help right away |
#
# A 429 is the cheapest failure: it costs the server almost nothing and tells the client the
# truth. A 504 is the most expensive: the work was done (partly) and thrown away. (RFC 9110
# defines 504 for a gateway whose upstream was too slow; using it for a server's own deadline
# is a common convention, which Atlas follows.)

# %% [markdown]
# A request can also end on the client, without any HTTP answer. Atlas records those with
# codes of its own, outside HTTP's: 596 retry budget exhausted, 597 circuit breaker open, 598
# connection error, 599 client timeout. They are not HTTP statuses; no server sends them.

# %% [markdown]
# The simulator's `full_stack` scenario switches on every mechanism at once: load near
# capacity, shedding, a server timeout inside the client's, client retries with a budget and a
# breaker, and a dependency with its own retries and breaker, with a capacity drop and an error
# burst along the way.
#
# **Predict before you run.** Which codes will attempts end with? And requests, after the
# client's retries?

# %%
# NBVAL_CHECK_OUTPUT
breakers.status_breakdown(simulate(full_stack(10_000, seed=SEED)))

# %% [markdown]
# Attempts end in all three. Requests do not: every 429, 503
# and 504 was retried, and what the user finally saw was either a success or a 596, "budget
# exhausted", Atlas's client-side code for a retry its budget refused. The retries hid the
# server's failures until the budget said stop.

# %% [markdown]
# ### Shedding load
#
# Four workers serve 80 requests/s; the usual load is 56/s. For 10 s the load jumps to twice
# capacity, 160/s (almost three times the usual load). Without a limit, every request is
# admitted and queues; with a concurrency limit, the excess is refused at once with 429 and
# the admitted requests keep their normal latency.
#
# **Predict before you run.** Without a limit, how long after the spike does latency return
# to normal?

# %%
# NBVAL_IGNORE_OUTPUT
breakers.overload_panel(seed=SEED)

# %% [markdown]
# Set the limit to 0 (no limit): the queue grows by 80 requests every second of the spike and
# takes about half a minute to drain afterwards, during which every request is seconds late.
# With a limit of 20 (4 in service and 16 waiting), the p99 stays under half a second and the
# service is back to normal the moment the spike ends. Without a limit no request fails, and
# goodput is even higher, yet a p99 of ten seconds misses every SLO tier of the reference
# card: accepting work you cannot finish in time is not kindness, it is a failure delivered
# late to everybody.

# %% [markdown]
# ## The retry storm: a metastable failure
#
# Bronson et al. ("Metastable Failures in Distributed Systems", HotOS 2021) describe systems
# that stay broken after their trigger is gone. Here: open-loop load at 70% utilisation,
# clients time out after 1 s and retry up to 3 times, and the server does not cancel work whose
# client has left. For 10 s (15 s to 25 s) capacity drops to 30%.
#
# **Predict before you run.** When capacity returns at 25 s, does the system recover? If not,
# which of these would fix it: longer backoff, a retry budget, a client circuit breaker, load
# shedding with a short queue, dropping work whose client has given up?

# %%
# NBVAL_CHECK_OUTPUT
storm = breakers.storm_comparison(seed=SEED)
storm

# %%
plot_timeseries(simulate(retry_storm("none", seed=SEED)), 1.0, title="Retry storm, no fix")
plt.show()

# %% [markdown]
# With naive retries the system never comes back: each request times out, is retried three
# times, and every attempt lands in a queue already longer than the timeout, so the server
# spends all its capacity on work nobody is waiting for. Offered work stays near three
# times capacity long after capacity has returned.
#
# Longer backoff does not help: in an open-loop system new requests keep arriving whatever
# the clients wait, and each still makes four attempts; backoff only delays the same work.
# What helps is **less work**: a budget (amplification falls to about 1), a breaker (stops
# sending while things are broken: its amplification is even below 1, because the requests it
# refuses are never sent and count zero attempts), shedding with a short queue (refused
# attempts cost nothing and admitted ones finish in time), or dropping expired work. The table
# judges recovery on the requests sent from 15 s after the drop ends.
#
# One subtlety about the last: a server that skips only work *already* expired does not
# recover. In a FIFO queue under overload, the oldest attempt still valid is always about to
# expire, so the server's effort still goes to answers nobody will read. It must skip work that
# *cannot be done before* its client gives up, which deadline propagation (the client sends
# its deadline, as gRPC does) makes possible. That is what the `drop_expired` fix in the table
# does.
#
# Two things to try in the panel, whose table also judges recovery 15 s after the drop ends.
# Shorten the drop: at 2 s the system absorbs it; at 3 s it never comes back, and a 30 s drop
# ends no worse. Past a threshold the size of the trigger no longer matters, which is what
# makes the failure metastable. Then set the capacity during the drop to 0, a total outage:
# once the outage is over, the system recovers! A dead server answers 503 at once and builds
# no queue; a slow one queues work it cannot finish. Slow is worse than down.

# %%
# NBVAL_IGNORE_OUTPUT
breakers.storm_panel(seed=SEED)

# %% [markdown]
# ## Live: an outage in the running service
#
# Now the same kind of outage in the real service. First, what the model leaves out: every
# real request crosses HTTP and the middleware stack, which takes a few milliseconds the
# simulator knows nothing of. We measure that once, on a private server of its own, and give
# it to the model (its `round_trip`). A queue amplifies such small constants, which is why
# they are worth measuring (DDIA chapter 1, "Describing Performance").

# %%
# NBVAL_IGNORE_OUTPUT
calibration = live.calibrate(workers=2)
calibration

# %% [markdown]
# The service: dependency calls bounded by 0.5 s (`DATABASE_TIMEOUT`), requests by 2 s
# (`HTTP_TIMEOUT`), no retries in the handler, and a breaker that opens after 5 failures and
# probes every 2 s. The load: 40 requests/s for 20 s; the dependency hangs from 5 s to 12 s.
#
# **Predict before you run.** When does the breaker open? How often does it probe, and when
# does it close? Will the live breaker keep time with the simulated one? (If you ran the whole
# notebook, its last cell has stopped the service; this cell starts it again.)

# %%
# NBVAL_IGNORE_OUTPUT
settings = Settings(http_timeout=2.0, database_timeout=0.5, retry_max_attempts=1,
                    circuit_breaker_failure_threshold=5, circuit_breaker_recovery_timeout=2.0)
server = live.start_service("atlas-02", settings=settings, seed=SEED)
outage = dict(load=Load(rate=40.0, duration=20.0), client=ClientPolicy(timeout=3.0),
              faults=[Fault(start=5.0, end=12.0, dependency_outage=True, name="dependency hangs")],
              seed=SEED)
runs = live.compose_experiment(server, settings, calibration=calibration, **outage)
live.generator_note(runs["live"])  # did the generator keep its schedule? (as in notebook 01)

# %% [markdown]
# The service reports its breaker's state and history at `/admin/breaker`; the load generator
# fetched the history and put it on the run's clock. Side by side with the simulation:

# %%
# NBVAL_IGNORE_OUTPUT
live.transition_table(runs)

# %%
plot_breaker_timelines(runs, title="Dependency hangs from 5 s to 12 s: simulated and live")
plt.show()

# %% [markdown]
# The live breaker keeps time with the simulated one to within a few hundredths of a second:
# five timed-out calls open it, each probe 2 s later hangs for its 0.5 s and fails, and the
# first probe after the dependency is back closes it. The same policy code, on two clocks.
# While it is open, live requests fail in a few milliseconds, the round trip and nothing more.

# %%
# NBVAL_IGNORE_OUTPUT
httpx.get(server.url + "/admin/breaker", trust_env=False).json()["state"]

# %% [markdown]
# ## Exercises
#
# **Exercise 1.** Drive a consecutive breaker with `failure_threshold=3` and
# `recovery_timeout=4.0` through `script` (from the first section). At what time does it
# first turn half-open?

# %%
answer_1 = ...

# %%
trace_1 = drive_breaker(BreakerConfig(failure_threshold=3, recovery_timeout=4.0), script)
check(answer_1, trace_1.first("half_open"), hint="trace.first('half_open') after driving it")

# %% [markdown]
# **Exercise 2.** Work takes a lognormal time with mean 50 ms and `shape=1.0`. Which timeout
# (in seconds, e.g. `0.1` or `"100 ms"`) cuts off 0.5% of healthy requests? (Hint:
# `Distribution.quantile`.)

# %%
answer_2 = ...

# %%
check(answer_2, Distribution(mean=0.05, kind="lognormal", shape=1.0).quantile(0.995), rel=0.02,
      hint="the timeout is the 99.5th percentile")

# %% [markdown]
# **Exercise 3.** Which retry-storm fixes let the system recover (at least 95% of requests
# served 15 s after the drop)? Give the names from the storm table's index, as a set or a
# list, e.g. `{"budget"}` or `["budget"]`.

# %%
answer_3 = ...

# %%
check(answer_3, set(storm.index[storm["ok 15 s after the drop (%)"] >= 95]),
      choices=list(storm.index),
      hint="read the 'ok 15 s after the drop (%)' column of the storm table")

# %% [markdown]
# **Exercise 4.** In the overload panel, what is the largest concurrency limit, in steps of 4
# from 4 to 80, that keeps the p99 of the whole run under 0.5 s?

# %%
answer_4 = ...

# %%
panel = breakers.overload_panel(seed=SEED)
limits = [n for n in range(4, 81, 4) if panel.update(max_concurrent=n).table["p99 (s)"].iloc[0] < 0.5]
check(answer_4, max(limits), hint="panel.update(max_concurrent=n).table['p99 (s)']")

# %% [markdown]
# ## Recap
#
# * A **circuit breaker** turns slow failures into fast ones. Its value is not fewer errors (it
#   may cause more) but free workers: a broken dependency no longer drags down the requests
#   that never needed it.
# * A **timeout** at the p*q* of healthy latency falsely cuts off 1 − *q* of healthy requests;
#   there is no value without a cost, only a choice of which cost.
# * **504** means "too slow, work wasted", **429** "too full, work not started", **503**
#   "something I depend on is broken". Shedding early (429) is the cheapest way to say no, and
#   keeps admitted work fast through an overload.
# * A **retry storm** can keep a system down after its trigger is gone. Patience (backoff)
#   does not end it in an open-loop system; less work does: budgets, breakers, short queues,
#   and skipping work that cannot finish before its client gives up.
#
# **Next:** `03_scalability_load_and_latency.ipynb`: describing load and performance,
# percentiles, coordinated omission, queueing and the tail at scale.
#
# ## References
#
# * M. Kleppmann, *Designing Data-Intensive Applications*: chapter 1, "Reliability"; chapter 8,
#   "Unreliable Networks" ("Timeouts and Unbounded Delays").
# * B. Beyer et al. (eds.), *Site Reliability Engineering*, chapter 21, "Handling Overload",
#   and chapter 22, "Addressing Cascading Failures".
# * M. Nygard, *Release It!*, 2nd ed., "Stability Patterns": Circuit Breaker, Timeouts,
#   Shed Load.
# * N. Bronson, A. Aghayev, A. Charapko, T. Zhu, "Metastable Failures in Distributed Systems",
#   HotOS 2021.
# * Resilience4j documentation, "CircuitBreaker".

# %% [markdown]
# Finally, stop the live service (running its cell again starts it again), and check that it
# left nothing behind in this kernel: no server, no thread.

# %%
server.stop()
left = live.leftovers()
print(f"{server}; still running in this kernel: {left or 'nothing'}")
assert not left, left
