"""Utilities every stage uses: one-line errors, processes and sockets, the machine a measurement ran on,
what kind a file is, progress bars. Nothing here imports another stage."""
