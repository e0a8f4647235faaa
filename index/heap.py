"""The top-k min-heap every search kernel fills (hits ranked by score descending, doc_idx ascending, the worst
at position 0), and the max-heap by key that blockmax and impact pop their next block or segment from."""
import numba


@numba.njit(inline="always")
def _worse(s1, d1, s2, d2):  # pragma: no cover - compiled
    """Is hit (s1, d1) ranked below hit (s2, d2)?"""
    return s1 < s2 or (s1 == s2 and d1 > d2)


@numba.njit(inline="always")
def _offer(scores, docs, n, k, s, d):  # pragma: no cover - compiled
    """Offer hit (s, d) to the top-k min-heap scores/docs holding n hits (worst at 0); returns the new n."""
    if n < k:  # push, sift up
        i = n
        scores[i], docs[i] = s, d
        while i > 0:
            parent = (i - 1) // 2
            if not _worse(scores[i], docs[i], scores[parent], docs[parent]):
                break
            scores[i], scores[parent] = scores[parent], scores[i]
            docs[i], docs[parent] = docs[parent], docs[i]
            i = parent
        return n + 1
    if _worse(scores[0], docs[0], s, d):  # replace the worst, sift down
        scores[0], docs[0] = s, d
        i = 0
        while True:
            left, worst = 2 * i + 1, i
            if left < n and _worse(scores[left], docs[left], scores[worst], docs[worst]):
                worst = left
            if left + 1 < n and _worse(scores[left + 1], docs[left + 1], scores[worst], docs[worst]):
                worst = left + 1
            if worst == i:
                break
            scores[i], scores[worst] = scores[worst], scores[i]
            docs[i], docs[worst] = docs[worst], docs[i]
            i = worst
    return n


@numba.njit(inline="always")
def _sift_down_max(heap, bound, m, i):  # pragma: no cover - compiled
    """Restore the max-heap (by bound[block]) of the first m blocks in `heap` below position i."""
    while True:
        left, best = 2 * i + 1, i
        if left < m and bound[heap[left]] > bound[heap[best]]:
            best = left
        if left + 1 < m and bound[heap[left + 1]] > bound[heap[best]]:
            best = left + 1
        if best == i:
            return
        heap[i], heap[best] = heap[best], heap[i]
        i = best
