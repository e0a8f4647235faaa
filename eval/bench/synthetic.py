"""A synthetic corpus of sparse document vectors that keeps the statistics of real encoded documents.

For scale tests (1M documents) without encoding 1M texts: each synthetic document draws
- its number of nonzeros from the real documents' length distribution,
- its distinct terms with probability proportional to each term's real document frequency,
- each term's weight from that term's real weights (the per-term weight distribution is kept exactly).
Terms are drawn independently, so the synthetic corpus has no topical clustering: a harder case for
block-max pruning than real collections.

`fit_topics` + `topical_chunks` (below) draw a topical corpus instead: the same statistics, with documents that
cluster by topic as real ones do, streamed a chunk at a time; `topical_queries` draws queries from its topics.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np
import scipy.sparse as sp

from lsr.index import LsrError, SparseBatch


@numba.njit(cache=True)
def _draw(lengths, cdf, weight_offsets, weight_values, seed, indptr, terms, weights):  # pragma: no cover
    np.random.seed(seed)
    vocab_size = cdf.shape[0]
    seen = np.full(vocab_size, -1, dtype=np.int64)
    for d in range(lengths.shape[0]):
        start = indptr[d]
        n = 0
        while n < lengths[d]:
            t = np.searchsorted(cdf, np.random.random() * cdf[-1], side="right")
            if t >= vocab_size or seen[t] == d:
                continue
            seen[t] = d
            terms[start + n] = t
            count = weight_offsets[t + 1] - weight_offsets[t]
            weights[start + n] = weight_values[weight_offsets[t] + np.random.randint(0, count)]
            n += 1
    return indptr  # rows come out unsorted; SparseBatch.from_scipy sorts each row's (term, weight) pairs


def synthesize(real: SparseBatch, num_docs: int, seed: int = 0) -> SparseBatch:
    """`num_docs` synthetic document vectors with the statistics of `real` (see the module docstring)."""
    if len(real) == 0 or real.nnz == 0:
        raise LsrError("synthesize needs real document vectors to copy statistics from")
    columns = real.to_scipy().tocsc()
    columns.sort_indices()
    weight_offsets, weight_values = columns.indptr.astype(np.int64), columns.data.astype(np.float32)
    target_df = np.diff(columns.indptr) / len(real)
    rng = np.random.default_rng(seed)
    real_lengths = np.minimum(real.row_nnz(), int((target_df > 0).sum()))

    def draw(n: int, propensity: np.ndarray, draw_seed: int) -> SparseBatch:
        lengths = rng.choice(real_lengths, size=n, replace=True).astype(np.int64)
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        terms = np.empty(indptr[-1], dtype=np.int32)
        weights = np.empty(indptr[-1], dtype=np.float32)
        _draw(lengths, np.cumsum(propensity), weight_offsets, weight_values, draw_seed, indptr, terms, weights)
        return SparseBatch.from_scipy(sp.csr_matrix((weights, terms, indptr), shape=(n, real.vocab_size)))

    # Drawing distinct terms in proportion to df under-draws the most frequent terms (a document cannot take
    # a term twice), so the propensities are corrected on a sample until the drawn df matches the real one.
    propensity = target_df.astype(np.float64)
    sample = min(num_docs, 20_000)
    for step in range(4):
        drawn_df = np.bincount(draw(sample, propensity, seed + 1 + step).term_ids, minlength=real.vocab_size) / sample
        ratio = np.where(drawn_df > 0, target_df / np.maximum(drawn_df, 1e-12), 1.0)
        propensity = propensity * np.clip(ratio, 0.5, 4.0)
    return draw(num_docs, propensity, seed)


# --- the topical corpus -------------------------------------------------------------------------------------------
# Real collections cluster: documents about one subject share its vocabulary, which is what block-max pruning,
# BMP's superblocks and Seismic's clustered posting lists exploit. `synthesize` has no such structure. The
# topical generator learns topics from the real vectors and draws each document from a mixture of a few:
#   1. spherical k-means over the real document vectors (cosine, L2-normalised rows) gives T topics;
#   2. each topic is a term propensity: the document frequency of its member documents, smoothed toward the
#      global document frequency by `smoothing` pseudo-documents (a Dirichlet prior);
#   3. each synthetic document takes 1-3 topics (drawn by topic size, TOPICS_PER_DOC), mixed with Dirichlet
#      weights, its length from the real lengths, its distinct terms from the mixture of topic propensities and
#      each term's weight from that term's real weights in the topic's documents (smoothed toward all its real
#      weights as the propensities are; a real weight either way, as in `synthesize`);
#   4. the propensities of every topic are corrected together, term by term, on a sample, until the corpus'
#      global document frequencies match the real ones (as `synthesize` corrects its one propensity).
# Every document is drawn from its own seed (seed, doc_idx), so a corpus drawn in chunks of any size equals the
# corpus drawn at once, and 10M documents stream through memory a chunk at a time.

TOPICS_PER_DOC = (0.8, 0.15, 0.05)  # P(1 topic), P(2 topics), P(3 topics)
DIRICHLET_ALPHA = 1.0  # the mixture weights of a document's topics: Dirichlet(alpha, ..., alpha)


@numba.njit(cache=True)
def _mix64(x):  # pragma: no cover  (splitmix64's finaliser: a well-spread 64-bit hash)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _doc_hash(seed: int, doc_idx: np.ndarray, salt: int) -> np.ndarray:
    """A 64-bit hash per (seed, document, salt), vectorised: where each document's draws start."""
    with np.errstate(over="ignore"):
        x = (np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) + doc_idx.astype(np.uint64) * np.uint64(0xD1B54A32D192ED03)
             + np.uint64(salt))
        return _mix64(x)


@numba.njit(cache=True)
def _draw_topical(doc_seeds, indptr, topic_cdf, num_topics_cdf, alpha, cdfs, weight_offsets, weight_values,
                  topic_offsets, topic_values, smoothing, terms, weights, dominant):  # pragma: no cover
    vocab_size = cdfs.shape[1]
    seen = np.full(vocab_size, -1, dtype=np.int64)
    topics = np.empty(3, dtype=np.int64)
    mix = np.empty(3, dtype=np.float64)
    for d in range(doc_seeds.shape[0]):
        np.random.seed(doc_seeds[d])
        u = np.random.random()
        m = 1
        while m < 3 and u >= num_topics_cdf[m - 1]:
            m += 1
        total = 0.0
        for j in range(m):
            topics[j] = np.searchsorted(topic_cdf, np.random.random() * topic_cdf[-1], side="right")
            mix[j] = np.random.gamma(alpha, 1.0) + 1e-12
            total += mix[j]
        best = 0
        for j in range(m):
            if mix[j] > mix[best]:
                best = j
        dominant[d] = topics[best]
        acc = 0.0
        for j in range(m):
            acc += mix[j] / total
            mix[j] = acc
        mix[m - 1] = 1.0
        start, n = indptr[d], 0
        length = indptr[d + 1] - start
        while n < length:
            u = np.random.random()
            j = 0
            while j < m - 1 and u >= mix[j]:
                j += 1
            cdf = cdfs[topics[j]]
            t = np.searchsorted(cdf, np.random.random() * cdf[-1], side="right")
            if t >= vocab_size or seen[t] == d:
                continue
            seen[t] = d
            terms[start + n] = t
            # the weight: one the term has in the topic's real documents (with probability c / (c + smoothing),
            # c their number), else one of all its real weights
            key = topics[j] * vocab_size + t
            c = topic_offsets[key + 1] - topic_offsets[key]
            if c > 0 and np.random.random() * (c + smoothing) < c:
                weights[start + n] = topic_values[topic_offsets[key] + np.random.randint(0, c)]
            else:
                count = weight_offsets[t + 1] - weight_offsets[t]
                weights[start + n] = weight_values[weight_offsets[t] + np.random.randint(0, count)]
            n += 1


def spherical_kmeans(vectors: SparseBatch, num_topics: int, *, seed: int = 0, iterations: int = 30) -> np.ndarray:
    """The topic (0..num_topics-1) of each vector: k-means on the unit sphere (cosine similarity to the mean
    direction of each cluster), seeded; an emptied cluster restarts at the vector farthest from its centroid."""
    x = vectors.to_scipy().astype(np.float64)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    x = sp.diags(1.0 / np.maximum(norms, 1e-12)) @ x
    n = x.shape[0]
    num_topics = min(num_topics, n)
    rng = np.random.default_rng(seed)
    # k-means++ seeding on the cosine distance: each next centre drawn in proportion to 1 - its best similarity
    picks = [int(rng.integers(n))]
    best = np.asarray(x @ x[picks[0]].T.toarray()).ravel()
    for _ in range(num_topics - 1):
        gap = np.maximum(1.0 - best, 0.0)
        gap[picks] = 0.0
        pick = int(rng.choice(n, p=gap / gap.sum())) if gap.sum() > 0 else int(rng.integers(n))
        picks.append(pick)
        best = np.maximum(best, np.asarray(x @ x[pick].T.toarray()).ravel())
    centroids = x[picks].toarray()
    assign = np.full(n, -1)
    for _ in range(iterations):
        sims = np.asarray(x @ centroids.T)
        new = sims.argmax(axis=1)
        counts = np.bincount(new, minlength=num_topics)
        for empty in np.flatnonzero(counts == 0):  # restart at the worst-served vector
            worst = int(sims[np.arange(n), new].argmin())
            new[worst] = empty
            sims[worst, :] = 1.0
        if np.array_equal(new, assign):
            break
        assign = new
        sums = np.asarray((sp.csr_matrix((np.ones(n), (assign, np.arange(n))), shape=(num_topics, n)) @ x).todense())
        centroids = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return assign


@dataclass
class TopicModel:
    """What the topical generator draws from, fitted by `fit_topics` on real vectors."""

    vocab_size: int
    assign: np.ndarray  # the topic of each real document
    propensity: np.ndarray  # (topics, vocab) float64: each topic's term propensity, df-corrected
    topic_weight: np.ndarray  # (topics,): the share of real documents in each topic
    lengths: np.ndarray  # the real documents' numbers of nonzeros
    weight_offsets: np.ndarray  # per term, its real weights: weight_values[weight_offsets[t]:weight_offsets[t + 1]]
    weight_values: np.ndarray
    topic_offsets: np.ndarray  # per (topic, term), the weights in the topic's documents: key topic * vocab + term
    topic_values: np.ndarray
    global_df: np.ndarray  # the real document frequencies (fractions)
    query_lengths: np.ndarray | None = None  # the real train queries' numbers of nonzeros
    query_offsets: np.ndarray | None = None  # per term, its real query weights (as weight_offsets)
    query_values: np.ndarray | None = None
    settings: dict = field(default_factory=dict)

    @property
    def num_topics(self) -> int:
        return self.propensity.shape[0]

    def doc_lengths(self, doc_idx: np.ndarray, seed: int) -> np.ndarray:
        pick = _doc_hash(seed, doc_idx, 1) % np.uint64(len(self.lengths))
        return self.lengths[pick.astype(np.int64)]

    def draw(self, first: int, num_docs: int, seed: int, *, with_topics: bool = False):
        """Documents first .. first + num_docs - 1 of the corpus `seed` (each drawn from its own seed); with
        `with_topics`, also each document's dominant topic (its largest mixture weight)."""
        doc_idx = np.arange(first, first + num_docs, dtype=np.int64)
        lengths = self.doc_lengths(doc_idx, seed)
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        terms = np.empty(indptr[-1], dtype=np.int32)
        weights = np.empty(indptr[-1], dtype=np.float32)
        doc_seeds = (_doc_hash(seed, doc_idx, 2) >> np.uint64(32)).astype(np.int64)
        dominant = np.empty(num_docs, dtype=np.int64)
        _draw_topical(doc_seeds, indptr, np.cumsum(self.topic_weight), np.cumsum(TOPICS_PER_DOC),
                      float(self.settings.get("dirichlet_alpha", DIRICHLET_ALPHA)), self._cdfs(), self.weight_offsets,
                      self.weight_values, self.topic_offsets, self.topic_values,
                      float(self.settings.get("smoothing", 1.0)), terms, weights, dominant)
        batch = SparseBatch.from_scipy(sp.csr_matrix((weights, terms, indptr), shape=(num_docs, self.vocab_size)))
        return (batch, dominant) if with_topics else batch

    def _cdfs(self) -> np.ndarray:
        if getattr(self, "_cdf_of", None) is not self.propensity:  # recomputed when the propensity is replaced
            self._cdf_cache, self._cdf_of = np.cumsum(self.propensity, axis=1), self.propensity
        return self._cdf_cache


def _term_values(batch: SparseBatch) -> tuple[np.ndarray, np.ndarray]:
    columns = batch.to_scipy().tocsc()
    columns.sort_indices()
    return columns.indptr.astype(np.int64), columns.data.astype(np.float32)


def fit_topics(real: SparseBatch, num_topics: int = 128, *, train_queries: SparseBatch | None = None, seed: int = 0,
               smoothing: float = 1.0, dirichlet_alpha: float = DIRICHLET_ALPHA) -> TopicModel:
    """Topics of `real` document vectors (see above); `train_queries` (real encoded queries) give the
    synthetic queries their lengths and per-term weights."""
    if len(real) == 0 or real.nnz == 0:
        raise LsrError("fit_topics needs real document vectors to learn topics from")
    assign = spherical_kmeans(real, num_topics, seed=seed)
    num_topics = int(assign.max()) + 1
    weight_offsets, weight_values = _term_values(real)
    global_df = np.diff(weight_offsets) / len(real)
    presence = real.to_scipy().astype(bool).astype(np.float64)
    members = sp.csr_matrix((np.ones(len(real)), (assign, np.arange(len(real)))), shape=(num_topics, len(real)))
    counts = np.asarray((members @ presence).todense())  # (topics, vocab): member documents holding each term
    sizes = np.bincount(assign, minlength=num_topics).astype(np.float64)
    propensity = (counts + smoothing * global_df) / (sizes[:, None] + smoothing)
    lengths = np.minimum(real.row_nnz(), int((global_df > 0).sum())).astype(np.int64)
    rows = np.repeat(np.arange(len(real)), real.row_nnz())
    keys = assign[rows].astype(np.int64) * real.vocab_size + real.term_ids
    order = np.argsort(keys, kind="stable")
    topic_offsets = np.searchsorted(keys[order], np.arange(num_topics * real.vocab_size + 1)).astype(np.int64)
    model = TopicModel(real.vocab_size, assign, propensity, sizes / sizes.sum(), lengths, weight_offsets,
                       weight_values, topic_offsets, real.weights[order].astype(np.float32), global_df,
                       settings={"num_topics": num_topics, "smoothing": smoothing, "dirichlet_alpha": dirichlet_alpha,
                                 "topics_per_doc": list(TOPICS_PER_DOC), "fit_seed": seed})
    if train_queries is not None and train_queries.nnz:
        model.query_lengths = train_queries.row_nnz()[train_queries.row_nnz() > 0].astype(np.int64)
        model.query_offsets, model.query_values = _term_values(train_queries)
    # Distinct terms drawn in proportion to propensity under-draw the frequent terms (as in `synthesize`): correct
    # every topic's propensity by the same per-term ratio until a sample's global df matches the real one.
    sample = 20_000
    for step in range(4):
        drawn = model.draw(0, sample, seed=-(step + 1) % (1 << 31))
        drawn_df = np.bincount(drawn.term_ids, minlength=real.vocab_size) / sample
        ratio = np.where(drawn_df > 0, global_df / np.maximum(drawn_df, 1e-12), 1.0)
        model.propensity = model.propensity * np.clip(ratio, 0.5, 4.0)[None, :]
    return model


def topical_chunks(model: TopicModel, num_docs: int, seed: int = 0, chunk_docs: int = 250_000):
    """The topical corpus `seed` of `num_docs` documents, `chunk_docs` at a time (SparseBatch per chunk):
    concatenated, the chunks equal `synthesize_topical(model, num_docs, seed)` whatever the chunk size."""
    for first in range(0, num_docs, chunk_docs):
        yield model.draw(first, min(chunk_docs, num_docs - first), seed)


def synthesize_topical(model: TopicModel, num_docs: int, seed: int = 0) -> SparseBatch:
    """`num_docs` topical synthetic documents at once (small corpora; `topical_chunks` streams)."""
    return model.draw(0, num_docs, seed)


def topical_queries(model: TopicModel, num_queries: int, seed: int = 0) -> tuple[SparseBatch, np.ndarray]:
    """Synthetic queries from the topics, and the topic of each: a topic drawn by size, a length from the real
    train queries, distinct terms among those real queries use, drawn by the topic's propensity times its lift
    over the global df (the topic's characteristic heavy terms), each weight one of that term's real query
    weights."""
    if model.query_offsets is None:
        raise LsrError("topical_queries: fit_topics was given no train queries")
    rng = np.random.default_rng([seed, 7])
    used = np.flatnonzero(np.diff(model.query_offsets) > 0)
    lift = model.propensity[:, used] / np.maximum(model.global_df[used], 1e-12)[None, :]
    scores = model.propensity[:, used] * lift
    topics = rng.choice(model.num_topics, size=num_queries, p=model.topic_weight)
    rows, indptr = [], [0]
    terms_out, weights_out = [], []
    for topic in topics:
        p = scores[topic] / scores[topic].sum()
        length = min(int(rng.choice(model.query_lengths)), int((p > 0).sum()))
        terms = np.sort(used[rng.choice(len(used), size=length, replace=False, p=p)])
        lo, hi = model.query_offsets[terms], model.query_offsets[terms + 1]
        weights = model.query_values[lo + (rng.random(length) * (hi - lo)).astype(np.int64)]
        terms_out.append(terms)
        weights_out.append(weights)
        indptr.append(indptr[-1] + length)
        rows.append(topic)
    queries = sp.csr_matrix((np.concatenate(weights_out).astype(np.float32), np.concatenate(terms_out),
                             np.asarray(indptr)), shape=(num_queries, model.vocab_size))
    return SparseBatch.from_scipy(queries), np.asarray(rows)
