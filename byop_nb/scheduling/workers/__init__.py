"""The workers: executors, what runs in and around a worker, and what travels to it (internal).

The executor a Scheduler keeps (`_executors.ExecutorKeeper`, the sequential
executor) and what byop_nb changes inside a stdlib process pool
(`_pool_tuning`); Ray's executor (`_ray`); what runs in the worker, resource
limits and their messages (`_worker`, `_limits`); where limited calls fork
from (`_warm`, `_forkserver`); process families and deaths (`_processes`);
shipping functions and values by value (`_shipping`); which address of this
machine a worker elsewhere reaches (`_network`).
"""
