from pibench.cli import entry

entry()
