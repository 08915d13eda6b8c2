"""Sweeps: grids of cells, each one variant of a suite under one backend and its settings, measured as
`pibench run` measures it, kept and resumed in a folder, run here or on a Ray cluster.

    spec.py          the sweep file: a base suite and axes (or a list of cells), validated
    store.py         the sweep's folder: one record per cell under the digest of what decides its counts
    local.py         the local executor: one cell at a time on this machine (nothing to install)
    ray_executor.py  the Ray executor: a task (pack) or an actor per party (spread) per cell
    sweep.py         the driver: what is left to run, retries, progress over the whole sweep
    frame.py         one table over a sweep's cells, tidy frames, plots against an axis
"""
