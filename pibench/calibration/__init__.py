"""The calibrated cost model behind `pibench cost --predict`: `fit` (light: load, predict, fit) and
`microbench` (microbenchmarks on a pair of op servers, `opserver`)."""
