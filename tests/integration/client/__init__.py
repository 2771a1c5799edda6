"""The client API on both backends (transactional submit: PostgreSQL only). Tasks run on an
in-process `app.worker()`; waits are on results, on events the tasks set, or on polls with a
deadline."""
