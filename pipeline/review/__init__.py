"""The review library: seed statistics, seed groups, their comparison, the gate, the metric tables."""
