"""The inverted index: numpy and numba only, never torch."""
from .errors import IndexFormatError, LsrError
from .hits import Hit, Run, write_trec_run
from .protocols import DocumentEncoder, QueryEncoder
from .quantize import Quantization
from .search import ALGORITHMS, Searcher, brute_force_search, top_k
from .sparse import SparseBatch
from .storage import FORMAT_VERSION, IndexReader, IndexWriter

__all__ = ["ALGORITHMS", "FORMAT_VERSION", "DocumentEncoder", "Hit", "IndexFormatError", "IndexReader", "IndexWriter",
           "LsrError", "Quantization", "QueryEncoder", "Run", "Searcher", "SparseBatch", "brute_force_search",
           "top_k", "write_trec_run"]
