"""Celery, Dramatiq and Taskiq apps for `benchmarks/peers.py`, one module each.

Each module is imported twice: by its peer's own worker command, and by `drive.py`, the
process that fills the queue or times round trips. Both read the same `PEERS_*` environment
variables, so worker and driver agree on the broker, the result backend and the marker
directory:

- `PEERS_AMQP_URL`: the RabbitMQ vhost of this peer's run.
- `PEERS_RESULTS`: the result backend (`rpc://`, a Redis URL, a PostgreSQL DSN), or unset for
  no result backend at all (the default of all three peers).
- `PEERS_RESULTS_NAME`: Dramatiq's Redis key namespace / Taskiq's result table of this run.
- `PEERS_MARK_DIR`: where the `mark` task writes `time.time()` to a file named after its
  argument (`start`, `end`).
- `PEERS_VARIANT`: the configuration, for what the app itself must know: read by
  `taskiq_app` only (`quorum`, the default, or `classic`: the queue's type). Celery's and
  Dramatiq's configurations differ in their worker command only (pool, processes, threads).
"""
