# %% [markdown]
# # 00 · Welcome to Atlas
#
# Atlas is a workbook for the first chapter of Martin Kleppmann's *Designing Data-Intensive
# Applications* (DDIA), "Reliable, Scalable, and Maintainable Applications". The chapter is about
# ideas you cannot see by reading code: a retry that makes an outage worse, a queue that turns a
# small slowdown into a long one, a percentile that hides your unhappiest users. Here you *run*
# those ideas. Every experiment comes twice:
#
# * as a **simulation** (SimPy, seeded, seconds of traffic in a blink), where you can turn every
#   knob and repeat a run exactly, and
# * against a **live service** running inside this notebook (FastAPI behind uvicorn on
#   127.0.0.1), hit by real HTTP load, with faults injected on demand.
#
# Both use the *same* retry, backoff, circuit-breaker and load-shedding code, so when the two
# disagree it is the world, not the code, that differs.
#
# **In this notebook you will**
#
# 1. learn how to drive the workbook (cells, sliders, seeds, restarting);
# 2. meet "Atlas", the reference service every notebook measures, and its settings;
# 3. run a first experiment: a circuit breaker, a scripted outage, and a clock you control.

# %% [markdown]
# ## How to use the workbook
#
# * **Run cells in order**: `Shift+Enter` runs one; *Run → Run All Cells* runs the notebook.
#   Later cells use what earlier ones made.
# * **Sliders** re-run their experiment when you *release* them, not while you drag, so each
#   change answers in a blink. A *Reset* button brings the defaults back.
# * **Re-running is safe.** A cell that starts a live server stops the one it started before;
#   nothing piles up in the background.
# * **Seeds.** Each notebook has one `SEED` cell. Simulations are deterministic: the same seed
#   gives the same numbers, on any machine. Live measurements are the exception: they are real.
# * **Stuck?** *Kernel → Restart Kernel and Run All Cells* always gets you back to the start.
#
# Here is what "the same seed gives the same numbers" means. A retry policy waits a random
# time before each retry (jitter, of which much more in notebook 01); drawing the waits twice
# from the same seed gives the same waits.

# %%
SEED = 2024

# %%
import matplotlib.pyplot as plt
import numpy as np

from atlas_sim import Backoff, BreakerConfig, Settings
from atlas_sim.analysis import plot_breaker_trace
from atlas_sim.exercises import check
from atlas_sim.experiments import welcome
from atlas_sim.scripted import drive_breaker, outage_script


# %%
# NBVAL_CHECK_OUTPUT
def first_waits(seed, n=4):
    waits = Backoff(base=0.1, jitter="full").delays(np.random.default_rng(seed))
    return [round(next(waits), 4) for _ in range(n)]

first_waits(SEED), first_waits(SEED), first_waits(SEED + 1)

# %% [markdown]
# The first two lists agree to the last digit; the third, from another seed, does not.

# %% [markdown]
# ## The Atlas request path
#
# Every notebook measures one reference service, "Atlas". A request passes through five layers
# of middleware before any business logic runs, outermost first:
#
# ```
# client ─► RequestID ─► Timeout ─► Metrics ─► ErrorHandling ─► LoadShedding ─► handler ─► dependency
#           X-Request-ID  504 after  RED:       unhandled error   429 above       retry +
#           on every      HTTP_TIMEOUT  rate,    becomes a JSON    the concurrency  backoff +
#           response                 errors,    500, logged once  limit           circuit breaker
#                                    duration
# ```
#
# Each layer answers one of DDIA's reliability questions. *Timeout*: how long is a user willing
# to wait? *LoadShedding*: what do we do with work we cannot finish in time? *Retry* and
# *circuit breaker*: how do we survive a dependency's fault without turning it into our own
# failure? *Metrics* and *RequestID*: how will an operator see what happened (the chapter's
# "Operability")?
#
# One convention in that picture: RFC 9110 ("HTTP Semantics") defines 504 Gateway Timeout for
# a gateway whose upstream did not answer in time. Atlas, like many services, also answers 504
# when its own deadline passes.

# %% [markdown]
# The service is configured the way a deployed one would be, by environment variables. The
# **reference card**, `docs/reference-card.md` in the repository, lists them on one page with
# the request path and the patterns. Here are the defaults, each with its unit:

# %%
# NBVAL_CHECK_OUTPUT
Settings().table()

# %% [markdown]
# `Settings(http_timeout=2.0).table()` shows any other choice the same way.

# %% [markdown]
# ## A first experiment: a circuit breaker meets an outage
#
# A **circuit breaker** sits between a caller and a dependency. While the dependency answers,
# it stays *closed* and lets every call through. After `failure_threshold` failures in a row it
# *opens*: calls fail at once, without waiting for a dependency that is not going to answer.
# After `recovery_timeout` seconds it turns *half-open* and lets one probe call through. If the
# probe succeeds the circuit closes; if it fails, the circuit opens again and the timer restarts.
#
# To watch the state machine on its own, we drive it with a **manual clock**: time moves only
# when the script says so. The script is a call every second for 40 s, with the dependency down
# from t = 5 s until t = 20 s.
#
# **Predict before you run.** With `failure_threshold=5` and `recovery_timeout=10`:
# when does the circuit open? When is the first probe sent, and does it succeed?
# When is the circuit closed again, and is that when the dependency recovered?

# %%
script = outage_script(every=1.0, until=40.0, down_from=5.0, down_until=20.0)
config = BreakerConfig(failure_threshold=5, recovery_timeout=10.0)
trace = drive_breaker(config, script)

# %%
# NBVAL_CHECK_OUTPUT
trace.events

# %%
plot_breaker_trace(trace)
plt.show()

# %% [markdown]
# Read the picture from left to right. The first five failures (t = 5 to 9 s) each wait for the
# dependency's answer; the fifth opens the circuit. From then on calls are *rejected* at once:
# cheap for the caller, and no load on the dependency while it recovers. At t = 19 s the probe
# goes out, but the dependency is still down, so the circuit re-opens. The next probe, at
# t = 29 s, succeeds and the circuit closes.
#
# Notice the price: the dependency was healthy again at t = 20 s, yet callers were refused
# until t = 29 s. A longer `recovery_timeout` protects a struggling dependency better and
# recovers later; a shorter one recovers sooner and probes more often. Notebook 02 explores
# that trade-off under real load.

# %%
# NBVAL_CHECK_OUTPUT
trace.calls["outcome"].value_counts()

# %% [markdown]
# ### Your first sliders
#
# The same experiment on sliders. Release a slider and the figure and the numbers below it are
# redrawn; *Reset* brings back the values above. Try a recovery timeout of 1 s, then of 20 s:
# which one rejects fewer calls, and which one sends more probes into a dead dependency?

# %%
# NBVAL_IGNORE_OUTPUT
welcome.breaker_panel()

# %% [markdown]
# ## Exercises
#
# Each exercise has an answer cell (replace `...`) and a check cell that tells you whether the
# answer holds. Change what you like above and re-run: the checks compute their expectations
# from the same code.
#
# **Exercise 1.** In the run above, at what time (in seconds) was the first probe sent?
# Give a number, e.g. `12` or `"12 s"`.

# %%
answer_1 = ...

# %%
check(answer_1, trace.first("half_open"), hint="look for the first 'half_open' row in trace.events")

# %% [markdown]
# **Exercise 2.** Build a breaker with `recovery_timeout=4.0` (same threshold, same script).
#
# (a) How many calls does it reject? (The breaker above rejected 18.)

# %%
answer_2a = ...

# %%
short = drive_breaker(BreakerConfig(failure_threshold=5, recovery_timeout=4.0), script)
check(answer_2a, int((short.calls["outcome"] == "rejected").sum()),
      hint="count the 'rejected' outcomes of drive_breaker(...).calls")

# %% [markdown]
# (b) Why does the number change? Compare `short.events` with `trace.events` and give the
# letter of the reason, e.g. `"a"`:
#
# * `"a"`: it opens later, so fewer calls arrive while it is open;
# * `"b"`: it probes sooner after each opening, so it closes sooner after the dependency
#   recovers;
# * `"c"`: none of its probes fail.

# %%
answer_2b = ...

# %%
if short.first("open") > trace.first("open"):
    reason = "a"
elif short.first("closed") < trace.first("closed"):
    reason = "b"
else:
    reason = "c"
check(answer_2b, reason, choices=["a", "b", "c"],
      hint="when does each breaker open, and when does each close again?")

# %% [markdown]
# **Exercise 3.** Some dependencies never fail five times in a row but fail often: here every
# third call fails. A breaker counting *consecutive* failures never opens. One counting the
# *failure rate* over a sliding window of the last 10 calls (at least 10 seen, opening at 30%)
# does. At what time does it open?

# %%
flaky = [(float(t), t % 3 != 0) for t in range(1, 41)]
rate_config = BreakerConfig(mode="failure_rate", window_size=10, minimum_calls=10,
                            failure_rate_threshold=0.3, recovery_timeout=10.0)
answer_3 = ...

# %%
check(answer_3, drive_breaker(rate_config, flaky).first("open"),
      hint="drive_breaker(rate_config, flaky).events shows the transitions")

# %% [markdown]
# ## Recap
#
# * Atlas pairs every idea with a seeded simulation and a live service that share one policy
#   implementation; same seed, same simulated numbers.
# * The reference service's request path is RequestID → Timeout → Metrics → ErrorHandling →
#   LoadShedding → handler, with retries and a circuit breaker around each dependency call.
# * A circuit breaker trades a little availability (refusing calls that might have worked) for
#   a lot of protection (no waiting on, and no load for, a dependency that is down). Its
#   `recovery_timeout` decides how quickly it notices recovery.
#
# **Next:** `01_reliability_retries.ipynb`, faults versus failures, retries, backoff and jitter.
#
# ## References
#
# * M. Kleppmann, *Designing Data-Intensive Applications*, chapter 1, sections "Reliability"
#   (hardware faults, software errors, human errors) and "Maintainability" (operability).
# * M. Nygard, *Release It!*, 2nd ed., chapter 5, "Stability Patterns": Circuit Breaker.
# * Resilience4j documentation, "CircuitBreaker": count-based sliding windows and the
#   failure-rate threshold.
