"""Observation of container threads on the node: per-thread telemetry, run-queue delay
histograms from BPF, the placement linter, bounded scheduler trace capture and dashboards.

Everything here is read-only with respect to scheduling: it never changes a cgroup or a thread.
"""
