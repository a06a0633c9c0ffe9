"""Temper overcommit webhook (L1): scales the CPU requests of non-critical pods on create."""
