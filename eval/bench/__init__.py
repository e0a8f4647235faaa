"""Benchmarks (`lsr bench ...`); results files under eval/results/, each written whole (`results`).

- `head`, `encode`, `decoder`: the SPLADE head alone (`lsr bench head`), end-to-end encoding (`lsr bench
  encode`) and Echo decoder encoding (`lsr bench decoder`); `measure`: what they share (peak memory and
  timing of a call, one fresh process per measurement on CPU: `python -m lsr.eval.bench.worker`).
- `gpu`: the prepared GPU run (`lsr bench gpu [--dry-run]`): the gpu-marked tests, the head, the largest
  batch in a memory budget, training steps and Echo encoding, per head, in one command.
- `query`: query processing, ours against the engines of `lsr.eval.engines` (`lsr bench query`).
- `chunks`: exhaustive search with and without chunking (`python -m lsr.eval.bench.chunks 1M`).
- `loadtest`: the REST API under concurrent clients on loopback (`lsr bench serve`).
- `synthetic`: scale corpora with the statistics of real encoded documents (`--corpus 1M`).

Each module holds its command's defaults, value sets and row format (`format_row`); the command line only
parses options and calls. None imports torch or an engine's package before a benchmark runs.
"""
