"""What users call: `App`, tasks, handles, submission, batches, dead letters, waiting.

The modules below `App` take its `Runtime` (settings and connections), never the `App`;
nothing here imports `taskq.worker`, `taskq.scheduler` or `taskq.cli`.
"""
