"""Temper node agent (L0): tiers, scx_layered config, scheduler supervision, tier-load."""
