"""A local Cloud Scheduler (REST v1): jobs fired on a cron schedule through the runner's dispatcher.

Not to be confused with :mod:`local_runner.scheduler`, the loop that dispatches Cloud Tasks.
"""
