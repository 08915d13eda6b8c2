"""Counting: the analytic cost of a variant (nonlinear operations by kind and shape, FLOPs), the layer
sample a run measures, the papers' notation, network profiles and the latency model. No torch."""
