"""The inverted index and the search layer: numpy and numba only, never torch.

Storage (`IndexWriter`, `IndexReader`, `verify_index`), query processing (`Searcher`, the reference
`brute_force_search`), the dense store, fusion, PRF, and `SearchService`, which ranks with encoders injected
through the protocols declared here.
"""
from .dense import DenseStore
from .documents import DocumentNotFound, StoredDocument
from .errors import EngineUnavailable, IndexFormatError, LsrError
from .folder import IndexWriter, add_dense_store, amend_index, verify_index
from .fusion import interpolate, interpolate_hits, normalize, normalize_run, rrf, rrf_hits
from .hits import Hit, Run, write_trec_run
from .prf import feedback_matrix, rocchio_sparse, vector_prf
from .protocols import DenseQueryEncoder, DocumentEncoder, EncoderProvider, QueryEncoder, SparseSearcher
from .quantize import Quantization
from .ranking import FuseIn, Fusion, Mode, PrfPlacement, Ranking
from .search import ALGORITHMS, SearchOptions, Searcher, brute_force_search
from .service import Ranked, SearchService
from .sparse import SparseBatch
from .storage import FORMAT_VERSION, IndexReader

__all__ = ["ALGORITHMS", "FORMAT_VERSION", "DenseQueryEncoder", "DenseStore", "DocumentEncoder", "DocumentNotFound",
           "EncoderProvider", "EngineUnavailable", "FuseIn", "Fusion", "Hit", "IndexFormatError", "IndexReader", "IndexWriter", "LsrError", "Mode",
           "PrfPlacement", "Quantization", "QueryEncoder", "Ranked", "Ranking", "Run", "SearchOptions", "SearchService",
           "Searcher", "SparseBatch", "SparseSearcher", "StoredDocument", "add_dense_store", "amend_index", "brute_force_search",
           "feedback_matrix", "interpolate", "interpolate_hits", "normalize", "normalize_run", "rocchio_sparse",
           "rrf", "rrf_hits", "verify_index", "vector_prf", "write_trec_run"]
