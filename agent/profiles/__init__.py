"""Workload profiles: per-thread-group scheduling inside one pod.

``schema`` defines the YAML format and ``catalog`` the builtin and custom profiles and the
selection per pod. ``layers`` translates profiles into scx_layered layers and states the
precedence rules, and ``resolver`` is what the agent's reconcile loop calls. ``train`` proposes
a profile from a running process. docs/profiles.md describes all of it for users.
"""
