"""Relevance evaluation (`clipsearch eval`): query sets, targets, metrics, comparison, reports.

queries  -- read/write JSON Lines query sets; generate known-item sets from a catalog
targets  -- where queries go: the in-process service or an HTTP API, one request body
runner   -- run a set against a target, score it (EvalResult)
metrics  -- ir-measures definitions, bootstrap intervals, latency percentiles
compare  -- several configurations, per-query wins/losses, the regression gate
report   -- the --report folder (Markdown, charts, worst queries), written atomically
"""
