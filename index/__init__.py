"""The inverted index: numpy and numba only, never torch."""
from .dense import DenseStore, has_dense_store, write_dense_store
from .errors import IndexFormatError, LsrError
from .fusion import interpolate, interpolate_hits, normalize, normalize_run, rrf, rrf_hits
from .hits import Hit, Run, write_trec_run
from .protocols import DocumentEncoder, QueryEncoder
from .prf import feedback_matrix, rocchio_sparse, vector_prf
from .quantize import Quantization
from .search import ALGORITHMS, Searcher, brute_force_search, top_k
from .sparse import SparseBatch
from .storage import FORMAT_VERSION, IndexReader, IndexWriter

__all__ = ["ALGORITHMS", "FORMAT_VERSION", "DenseStore", "DocumentEncoder", "Hit", "IndexFormatError", "IndexReader",
           "IndexWriter", "LsrError", "Quantization", "QueryEncoder", "Run", "Searcher", "SparseBatch",
           "brute_force_search", "feedback_matrix", "has_dense_store", "interpolate", "interpolate_hits",
           "normalize", "normalize_run", "rocchio_sparse", "rrf", "rrf_hits", "top_k", "vector_prf",
           "write_dense_store", "write_trec_run"]
