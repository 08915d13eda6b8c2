"""The quality side of the trade-off: train the variants small, measure perplexity and attention entropy
(the corpus they train on is `pibench.suites.corpus`; their accuracy under MPC `pibench.measuring.accuracy`).

entropy.py  attention entropy per layer and head, the seed's quarter bins, overload and collapse
ereg.py     the entropy regulariser (EReg) of Jha & Reagen, with learnable per-head thresholds
train.py    the language model around the stack, AdamW with warm-up and cosine decay, evaluation
training_record.py  the versioned record of `pibench train`
summary.py  quality tables in every format, and the figures (entropy, training curves, PPL vs comm.)
"""

# The seed's bins: quarters of a head's entropy as a share of its maximum (`entropy`, `summary`).
QUARTERS = ("[0, 1/4)", "[1/4, 1/2)", "[1/2, 3/4)", "[3/4, 1]")
