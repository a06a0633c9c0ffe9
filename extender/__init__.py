"""Temper kube-scheduler extender (L1): scores nodes from the per-tier load of each Node."""
