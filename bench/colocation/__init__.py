"""Colocation benchmark: memcached's tail latency beside a ladder of batch fillers.

Run as root from the repository root: ``.venv/bin/python -m bench.colocation`` (see
``cli.py`` for the options and ``docs/benchmarks.md`` for the recorded results).
"""
