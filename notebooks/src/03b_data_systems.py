# %% [markdown]
# # 03b · The data system behind the service
#
# DDIA's chapter 1 opens ("Thinking About Data Systems") with an application that is not one
# program but several parts stitched together: a **database** that keeps the data, a **cache**
# that makes reads fast, a **message queue** (an event log) that hands slow work to the
# background. Each part makes its own promises: the database that a committed write survives a
# crash, the cache that it answers quickly (not that it is right), the log that a consumer sees
# every event in order. None of them promises anything about the *others*. Keeping the cache
# and the log in step with the database is the application's job, and when it gets that wrong
# the reader sees a stale or a missing answer while every part works as documented.
#
# Notebook 03 described the home-timeline load with arithmetic. Here the Atlas service keeps
# its orders, its idempotency keys and DDIA's home timelines in a real database, behind a real
# connection pool, with a real cache and an event log, and the simulator runs the same
# configuration beside it.
#
# **In this notebook you will**
#
# 1. meet the parts: a database (SQLite, or PostgreSQL when installed), a cache (Redis, when
#    installed) and an event log (a table with consumer offsets);
# 2. kill the service in the middle of a load of orders and restart it: no acknowledged order
#    is lost, and none is applied twice;
# 3. watch a connection pool run dry, live and simulated, against its closed form;
# 4. follow an event through the outbox to a consumer, and see how far the consumer lags;
# 5. run DDIA's home timelines (fan-out on read, on write, and the hybrid) on those parts,
#    count the database work each one does, let the cache go cold, and lose a fan-out.

# %%
SEED = 2024

# %%
import matplotlib.pyplot as plt

from atlas_sim.analysis.pool import pool_theory
from atlas_sim.exercises import check
from atlas_sim.experiments import datasystem, datasystem_panel, timelines
from atlas_sim.policies import PoolConfig
from atlas_sim.sim import simulate
from atlas_sim.social import SocialGraph
from atlas_sim.workload import Distribution

# %% [markdown]
# ## The parts
#
# The reference card draws the Atlas instances over PostgreSQL (the primary database), Redis
# (the cache) and Kafka (the events). Here:
#
# * **the database** is SQLite by default: a file, in WAL mode (write-ahead logging: readers
#   do not block the one writer), nothing to install. Where Debian's `postgresql` is installed,
#   the notebook starts a PostgreSQL server of its own, on 127.0.0.1, a free port and a
#   temporary directory, and stops it at the end;
# * **the cache** is Redis where Debian's `redis-server` is installed, started and stopped the
#   same way; without it the service runs with no cache, and says so;
# * **the event log** is a table in the database: each event gets an offset 1, 2, 3, ... in
#   its topic, and each consumer group commits the offset it has handled. That is Kafka's
#   model (a partitioned log, consumers that track their own position), on a table, because
#   Kafka is not installable here.
#
# What installing the two programs buys (`apt install postgresql redis-server`): the same
# experiments on a server database with many writers at once (SQLite lets one write at a
# time), and a cache that really can go cold. Every number below is computed either way; the
# table says which parts ran.

# %%
# NBVAL_IGNORE_OUTPUT
parts = datasystem_panel.start_parts()
parts.table()

# %% [markdown]
# ## Durability and exactly-once across a crash
#
# A database's first promise is **durability**: a transaction it has committed survives a
# crash of the program that wrote it. That is not yet what a client wants. A client that sent
# an order and got no answer cannot tell whether the order was applied, so it retries, with
# the same **idempotency key** (notebook 01). The service must then answer the retry with the
# first answer, not apply the order again. That holds across a crash only if the order and
# the answer stored under its key are written in **one transaction**: both or neither.
#
# The experiment runs the service in a child process, sends orders with keys (each retried
# until it gets an answer), kills the process with SIGKILL in the middle (a crash: no orderly
# shutdown), starts a new one on the same database, and lets the retries finish. Then it
# counts.
#
# **Predict before you run.** Of the orders acknowledged with a 2xx before the crash, how many
# are missing from the database afterwards? How many orders are stored twice?

# %%
# NBVAL_IGNORE_OUTPUT
crash = datasystem_panel.crash_demo(store_url=parts.store("crash"), seed=SEED)
crash

# %% [markdown]
# Of 60 orders, the kill came after 15 were acknowledged. After the restart each of those 15,
# sent again with its key, got its first answer back, identical; the orders in flight at the
# kill and those not yet sent were applied once. Every order is stored once: none lost, no
# duplicates. A retry of an order in flight at the kill either finds its key's stored answer
# (the transaction committed just before the kill) and replays it, or finds nothing (it never
# committed) and applies the order once. A service that kept its keys in memory, as notebook
# 01's did, forgets them with the crash: each retry of an order that committed before it
# would be applied a second time.

# %% [markdown]
# ## The connection pool
#
# A database connection is expensive to open (a process on PostgreSQL, authentication, a
# handshake), so a service opens a few and shares them: a **connection pool**. Atlas's pool
# has psycopg_pool's three settings: its `size`, a bound on how many requests may wait
# (`max_waiting`), and how long a request waits for a connection before it gives up
# (`timeout`, the reference card's `DATABASE_TIMEOUT`): then the service answers 503.
#
# A pool is a queue with `size` servers, and a slow query is a long service time. Notebook
# 03's Erlang C answers what share of requests wait; with a timeout, the M/M/c+D queue
# (Baccelli and Hebuterne) answers what share gives up.
#
# **Predict before you run.** A pool of 2, queries of 80 ms, 30 orders a second. What share of
# the orders waits for a connection? With a timeout of 0.5 s, what share times out?

# %%
pool = PoolConfig(size=2, timeout=0.5)
query = Distribution(mean=0.08, kind="exponential")

# %% [markdown]
# Two connections each busy 80 ms serve at most 2 / 0.08 = 25 orders a second; 30 arrive. The
# pool is overloaded, and with no timeout its queue would grow without end. Theory first:

# %%
# NBVAL_CHECK_OUTPUT
theory = pool_theory(rate=30.0, pool=pool, hold=query)
print(f"wait: {theory.P_wait:.1%}, time out: {theory.P_timeout:.1%}, "
      f"mean wait of the granted: {1000 * theory.mean_wait_granted:.0f} ms")

# %% [markdown]
# Almost every order waits, and about one in six times out: the timeout is what keeps the
# queue finite, by turning the excess load into 503s. Now the live service, with this pool
# and seeded query times in its `ServerConfig`, offered 300 orders at 30 a second (about 10
# seconds; it first times a few orders one at a time, to learn what a real query adds to the
# 80 ms):

# %%
# NBVAL_IGNORE_OUTPUT
live_pool = datasystem.pool_exhaustion_live(rate=30.0, requests=300, pool=pool,
                                            query_time=query, seed=SEED,
                                            store_url=parts.store("pool"))

# %% [markdown]
# Its simulated twin: the same `ServerConfig`, arrivals and query times, with what the live
# service measured added to each query, on SimPy's clock.

# %%
twin = datasystem.pool_exhaustion_twin(rate=30.0, requests=300, pool=pool, query_time=query,
                                       seed=SEED, calibration=live_pool.meta["calibration"])
simulated_pool = simulate(twin)

# %% [markdown]
# The table sets the three side by side; "simulated low" and "simulated high" bound what a run
# of 300 orders may show by chance, and "live inside" says whether the live figure is within
# them.

# %%
# NBVAL_IGNORE_OUTPUT
datasystem.pool_table(simulated_pool, live_pool, theory, pool=pool).round(1)

# %% [markdown]
# The live pool and its twin agree: the "live inside" column says, figure by figure, whether
# the live run fell within the twin's sampling error (the live service's timing varies a
# little from run to run, so now and then one row falls just outside). It is the same pool,
# one state machine on two clocks. Theory holds each connection for the drawn query time
# alone (exponential, 80 ms on average); the twin adds what a real query and commit cost on
# top (the calibration: a few milliseconds, about ten on PostgreSQL). In an overloaded pool a
# few milliseconds more per query can mean a visibly larger share of 503s, though in a run of
# 300 orders chance moves that share by several points either way: the simulated interval
# says how far. The wait rows are those of the orders that got a connection.
#
# The panel puts the simulated pool (2,000 orders a run) beside the closed form. Try a pool of
# 3 at the same load: the pool can serve 37.5 orders a second, and the timeouts all but
# vanish (0.3% in theory), though most orders still wait a little. Then set the rate to 60 a
# second with a pool of 8: about one order in eight waits, for a few milliseconds.

# %%
# NBVAL_IGNORE_OUTPUT
datasystem_panel.pool_panel(seed=SEED)

# %% [markdown]
# One connection more ends the timeouts, because the pool is a queue: below its capacity the
# waits are short, above it they are bounded only by the timeout. A longer timeout does not
# serve more orders: at 2 s instead of 0.5 s, still about one order in six times out (the
# pool cannot serve more than 25 a second), and each waits four times as long before it
# fails.

# %% [markdown]
# ## The event log: the outbox and consumer lag
#
# Some work after an order need not hold up its answer: a receipt, a notification, an entry
# in a warehouse. The service appends an **event** to a log and answers; background
# **consumers** read the log and do the work. Two things can go wrong.
#
# * **The dual write.** If the order is committed to the database and the event is then
#   appended in a second step, a crash between the two loses the event: the order exists and
#   its receipt is never sent. The **transactional outbox** appends the event in the same
#   transaction as the order: both or neither. Atlas's log is a table in the same database,
#   so the outbox is one transaction.
# * **Lag.** A consumer handles events at its own pace. Its **lag** is the log's end offset
#   minus the offset it has committed: how many events are waiting for it. A consumer that
#   crashes resumes from its committed offset, so it may handle a few events twice (those
#   handled after its last commit): its work must be idempotent.
#
# The experiment: the service appends an event to topic "orders" with every order (the
# outbox), and a consumer group "receipts" writes a receipt for each, its handler slowed to
# 10 ms an event, so it drains at most 100 events a second. Two bursts of 100 orders arrive
# at 250 a second. After the first, the lag drains. In the second, once the orders are in,
# the consumers are killed in the middle of a batch, and new ones start on the same database.
# `/metrics` is read every 50 ms for the consumer lag.
#
# **Predict before you run.** When a burst ends, does the lag drop at once? After the kill,
# from which offset do the new consumers start, and does any order miss its receipt?

# %%
# NBVAL_IGNORE_OUTPUT
lag = datasystem.consumer_lag_demo(store_url=parts.store("events"), seed=SEED)
datasystem_panel.consumer_lag_summary(lag)

# %%
datasystem_panel.plot_consumer_lag(lag)
plt.show()

# %% [markdown]
# The lag grows during each burst and drains afterwards at the consumer's rate: a queue again,
# with the log as its buffer. Nothing is lost while the consumer falls behind; the work is
# only late. That is what a log buys over a call: the producer never waits for the consumer.
# After the kill, the new consumers resume from the group's committed offset: the batch that
# was cut off was never committed, so it is read again, and every order gets its receipt. A
# handler that may see an event twice must be idempotent (a receipt is written once per order,
# whatever the number of deliveries).

# ## Home timelines on the real parts
#
# DDIA ("Describing Load") runs the home-timeline example on exactly these parts. A social
# graph drawn from notebook 03's follower model, scaled to 2,000 accounts with 20 followers
# each on average, is loaded into the database, and the service serves posts and timeline
# reads in the three ways:
#
# * **fan-out on read** (`"read"`): a post is one row; a read is one query joining `follows`
#   and `posts`;
# * **fan-out on write** (`"write"`): a post is one row and an event on topic "posts" in the
#   same transaction (the outbox); a consumer group inserts it into each follower's home
#   timeline, kept in the cache (a Redis ZSET, ordered by post id) or in a table of the
#   database. A read is one lookup. The comparison below keeps the timelines in the database's
#   table, so that every insert and every read is counted in one place; the cold-cache
#   experiment after it uses Redis;
# * **the hybrid**: fan-out on write, except for accounts with more than a threshold of
#   followers (here 100), whose posts are merged in at read time.
#
# **Predict before you run.** Which approach has the lowest read p99? Which delivers the
# celebrity's post to all its followers last?

# %%
# NBVAL_IGNORE_OUTPUT
run = timelines.compare_approaches(accounts=2000, mean_followers=20, threshold=100,
                                   seed=SEED, store_url=parts.store("timelines"))
table = run.table()
print(table.attrs["caption"])
table.round(2)

# %%
timelines.plot_approaches(run)
plt.show()

# %% [markdown]
# Read the table column by column. **Fan-out inserts per post**: fan-out on read makes none;
# fan-out on write makes one per follower of each post's author; the hybrid fewer, because the
# posts of accounts above the threshold are not fanned out. **Queries and rows per read**:
# fan-out on read runs one query per read, which walks the recent posts of everyone the reader
# follows and returns the newest 50; fan-out on write reads the prepared timeline, one
# indexed lookup of its 50 rows; the hybrid pays for its saved inserts with a second query at
# read time, for the posts of the above-threshold accounts the reader follows. Fan-out on read's
# cost grows with the posts of everyone followed; a materialised timeline's does not, which is
# why Twitter moved to fan-out on write once reads outnumbered posts. **The celebrity's
# delivery lag**: the time from its post to the last follower's timeline holding it, the burst
# notebook 03 predicted; at this scale about 1,400 inserts (the line above the table gives the
# exact count), done in hundredths of a second. The hybrid's is 0: the celebrity is above its
# threshold, so its post is read at read time, never fanned out.
#
# Each approach has two rows. "live" is the service; "sim" is its simulated twin, run on the
# same graph, the same posts and the same reads, with a cost model fitted to this live run
# (`calibrate_timelines`): what a statement costs per row, what the handler spends beyond its
# statements, the round trip outside the service, and how much longer than the model a
# handler took, each simulated read drawing its own round trip and its own slowdown from the
# ones measured here. The work columns agree exactly, because the twin counts queries and
# inserts the way the store does; the latencies agree to within a few milliseconds.
#
# Now the latencies, and with care: a p99 is the third-slowest of 300 reads, and a shared
# machine pauses now and then. Two things keep the comparison fair. Each approach runs in a
# process of its own, with a database of its own, and the reads go out in three rounds: in each
# round every approach gets the same block of reads (the same readers at the same moments),
# one approach after another, in an order that rotates, so that a busy spell of the machine
# falls on all three alike. And the cell below does not just compare three numbers: it
# resamples each approach's reads (a bootstrap) and says, pair by pair, whether each world
# can tell the two apart at all.

# %%
pairs = run.p99_pairs()
pairs[["a", "b", "sim_a_ms", "sim_b_ms", "sim", "live_a_ms", "live_b_ms", "live",
       "contradicts"]].round(1)

# %% [markdown]
# Read "<" as "a's p99 is lower than b's, beyond chance", ">" the other way, and "tie" as
# "this world cannot tell". The two worlds should never contradict each other (one saying "<"
# where the other says ">"); the last column checks it.
#
# What the latencies show depends on the database. On PostgreSQL (the card's database, used
# when installed) fan-out on read is the slowest at p99 in both worlds: its join is planned
# and run for each read, several milliseconds, where fan-out on write reads 50 prepared rows.
# On SQLite the same join walks a few hundred rows through an index in a fraction of a
# millisecond, less than this machine's noise, and approaches 1 and 2 tie. Either way the
# cost that separates the approaches as the graph grows is in the work columns; at 2,000
# accounts the latencies show only its beginning. (PostgreSQL taught one more lesson on the
# way: after five runs of the same statement it may switch to one generic plan for every
# reader, and for this query that plan walked the newest posts of everybody, ten times slower.
# The store asks PostgreSQL to plan each read for its own reader.)

# %% [markdown]
# ### A cold cache
#
# A cache is a copy. When it is flushed (a restart, an eviction, a new node), every read
# misses, and each miss is rebuilt by the query the cache was there to avoid. The experiment
# reads the timelines with a warm Redis, flushes it, and reads again (it needs Redis; without
# it the cell says so).
#
# **Predict before you run.** After the flush, by how much do the database queries per second
# grow?

# %%
# NBVAL_IGNORE_OUTPUT
datasystem_panel.cold_cache_or_why_not(parts, seed=SEED, reads=100)

# %% [markdown]
# Until the timelines are rebuilt, the database carries the whole read load that the cache
# had absorbed. A system sized for a warm cache can fall over on a cold one: the cache was
# part of its capacity, not only of its speed.
#
# ### Keeping the log in step with the database
#
# With the outbox, a post and its event commit together. Without it (`outbox=False`, a dual
# write), the post commits, then its event is appended in a second step, and the `lose_events`
# fault skips that step, as a crash between the two would.
#
# **Predict before you run.** With the outbox off and three events in ten lost, how many
# posts reach no follower at all? Does any part report an error?

# %%
# NBVAL_IGNORE_OUTPUT
timelines.consistency_demo(store_url=parts.store("outbox"), cache_url=parts.cache_url,
                           seed=SEED)

# %% [markdown]
# Without the outbox the lost posts are in the database and in no follower's timeline, and
# nothing failed: the database committed, the log appended what it was given, the cache
# served what it held. The guarantee that was broken belonged to none of them; it belonged to
# the application that stitched them together, which is DDIA's point.

# %% [markdown]
# ## Exercises
#
# **Exercise 1.** A pool of 2 connections, queries of 80 ms (exponential), 20 orders a second,
# and a timeout so long it never fires. What share of the orders waits for a connection? (A
# fraction such as `0.5` or a percentage such as `"50%"`; hint: Erlang C with c = 2.)

# %%
answer_1 = ...

# %%
check(answer_1, pool_theory(rate=20.0, pool=PoolConfig(size=2), hold=query,
                            timeout_fires=False).P_wait, rel=0.01,
      hint="Erlang C for c = 2 and offered load a = 20 × 0.08 = 1.6: 2ρ² / (1 + ρ), ρ = 0.8")

# %% [markdown]
# **Exercise 2.** The line above the home-timeline table names the celebrity and its number
# of followers. If the fan-out consumer inserts 6,000 timeline entries a second, how many
# seconds after the celebrity's post does its last follower see it, counting the inserts
# only? (Hint: `SocialGraph` is the same graph, built from the same seed.)

# %%
answer_2 = ...

# %%
graph = SocialGraph.generate(accounts=2000, mean_followers=20, seed=SEED)
check(answer_2, graph.follower_counts[graph.celebrity] / 6000, rel=0.01, unit="s",
      hint="delivery lag = the celebrity's followers / inserts per second")

# %% [markdown]
# **Exercise 3.** A consumer committed offset 40 of topic "orders", handled the events at
# offsets 41 to 45, and crashed before it committed again. The log's end offset is 60. From
# which offset does it read first when it restarts?

# %%
answer_3 = ...

# %%
check(answer_3, 40 + 1,
      hint="it resumes after its committed offset, not after the last event it handled")

# %% [markdown]
# **Exercise 4.** In Exercise 3, what is the consumer's lag just before it restarts (the
# events at offsets 41 to 45 included, which it will handle a second time)?

# %%
answer_4 = ...

# %%
check(answer_4, 60 - 40,
      hint="lag = end offset − committed offset: handled but uncommitted events count")

# %% [markdown]
# ## Recap
#
# * A data system is **stitched** from parts, each with its own guarantee: the database's
#   durability, the cache's speed, the log's order. Keeping them in step is the
#   application's work ("Thinking About Data Systems").
# * An order and its idempotency key's answer stored in **one transaction** survive a crash
#   exactly once: retries replay, nothing is lost, nothing applied twice.
# * A **connection pool** is a queue: below its capacity the waits are short, above it only the
#   **timeout** bounds them, by turning the excess into 503s. Erlang C and M/M/c+D predict both
#   worlds.
# * An **event log** decouples the producer from the consumer; the **outbox** keeps it in step
#   with the database; **lag** is end offset minus committed offset, and a consumer resumes
#   from its commit, so its work must be idempotent.
# * The **home timelines** trade read work against write work, as notebook 03's arithmetic
#   said, and the work counts show it; at this scale the latencies cannot. A cold cache moves
#   the read load back onto the database; a dual write loses fan-outs silently.
#
# **Next:** `04_scalability_overload.ipynb` (planned): load shedding, backpressure, adaptive
# concurrency limits.
#
# ## References
#
# * M. Kleppmann, *Designing Data-Intensive Applications*, chapter 1: "Thinking About Data
#   Systems", "Describing Load", "Approaches for Coping with Load".
# * psycopg documentation, "Connection pools" (psycopg_pool: `max_size`, `max_waiting`,
#   `timeout`).
# * F. Baccelli and G. Hebuterne, "On queues with impatient customers", Performance '81, 1981.
# * N. K. Boots and H. Tijms, "A multiserver queueing system with impatient customers",
#   Management Science 45(3), 1999.
# * Kafka documentation, "Design" (the log, consumer position and offsets).
# * C. Richardson, "Pattern: Transactional outbox" (microservices.io).
# * Redis documentation, "Sorted sets"; SQLite documentation, "Write-Ahead Logging";
#   PostgreSQL documentation, "Server Applications".
# * R. Krikorian, "Timelines at Scale" (talk, QCon 2012), as summarised by High Scalability.

# %% [markdown]
# Finally, stop the PostgreSQL and Redis this notebook started, and check that nothing is left
# running in this kernel.

# %%
parts.stop()
print(f"{parts}; still running in this kernel: {datasystem_panel.leftovers() or 'nothing'}")
