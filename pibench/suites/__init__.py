"""Suites: the YAML files under `suites/` (a model size, the variants, backend settings, a `train:`
section) validated into frozen, typed objects, with errors naming file, line and key; and the text a
suite trains and evaluates on (corpus: the Python standard library's sources as bytes)."""
