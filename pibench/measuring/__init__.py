"""Measuring: one party's walk over a suite under a backend, the runner that starts every party on this
machine, pibench's authenticated channel between parties, emulated network links."""
