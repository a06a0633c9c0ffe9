"""``temper demo``: the whole product on a local control plane, with a readable report."""
