"""C1000K: hold up to a million WebSocket connections on this machine and prove it.

    .venv/bin/python bench/c1000k.py --connections 100000          # or: make c1000k N=100000
    .venv/bin/python bench/c1000k.py --connections 1000000 --preflight-only

One run: preflight (limits, sysctls and memory against what the stage needs; refuses a stage
that would leave less than --min-free of memory) -> start `python -m reactor --proto ws` with
one worker per ~19.6k connections, worker i on port BASE + i (--port-per-worker) -> one
`bench/c/c1000k_client` per worker, client i connecting only to port BASE + i from the source
addresses 127.(1 + i // 256).(i % 256).1-4 -> wait until every connection is established (or
failed) -> sample memory while they are held idle -> "echo": one masked message per connection,
echo checked byte for byte -> "close": RFC 6455 close handshake on every connection -> stop the
server -> table, JSON (bench/results/c1000k-<N>-<time>.json) and PNG plot.

Why this layout (measured facts): a process holds at most its open-file hard limit
(20,000 here, not raisable), so 1M connections need ~51 server and ~51 client processes; one
source and one destination address give at most one ephemeral port range (~28k) of connections,
hence four sources per client; SO_REUSEPORT spreads unevenly (16.5k-16.9k per process at 100k),
so with workers near their fd limit one would overflow: per-worker ports give each worker exactly
its share (--shared-port measures the alternative).

Everything is bounded in time and torn down by PID (clients first, then the server: SIGTERM,
SIGKILL after a bound), also on Ctrl-C and errors. Children run in their own sessions and die
with this process (PR_SET_PDEATHSIG), so none outlives it. A memory guard aborts the run when
MemAvailable falls below half of --min-free: the machine is never pushed into the OOM killer.

The package's modules follow its concerns: ``procfs`` (kernel facts), ``plan`` (workers, ports,
source addresses), ``preflight`` (checks against the plan), ``processes`` (command lines, one
client, stopping by PID), ``run`` (the stages, sampling, teardown), ``report`` (figures and
table), ``plot`` (PNG) and ``cli`` (the command line, ``python -m c1000k`` from bench/).
"""
