"""Benchmarks (`lsr bench ...`); results files under eval/results/.

- `measure`: the SPLADE head alone (`lsr bench head`), end-to-end encoding (`lsr bench encode`) and Echo
  decoder encoding (`lsr bench decoder`), each measurement in a fresh process on CPU (peak RSS).
- `query`: query processing, ours against the engines of `lsr.eval.engines` (`lsr bench query`).
- `chunks`: exhaustive search with and without chunking (`python -m lsr.eval.bench.chunks 1M`).
- `loadtest`: the REST API under concurrent clients on loopback (`lsr bench serve`).
- `synthetic`: scale corpora with the statistics of real encoded documents (`--corpus 1M`).
"""
