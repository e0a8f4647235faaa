"""The dataset every pipeline takes (`BeirDataset`: documents, judged queries, qrels), whichever source it
was read from: a BEIR folder (lsr.eval.beir) or ir_datasets (lsr.eval.irds, ids with the `irds:` prefix)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Document:
    title: str
    text: str

    @property
    def contents(self) -> str:
        """The text every model sees: title and body joined by a space ("flat")."""
        return f"{self.title} {self.text}".strip()


@dataclass
class BeirDataset:
    name: str
    path: Path
    corpus: dict[str, Document]  # doc_id -> document, in file order
    queries: dict[str, str]  # query_id -> text, only queries judged in the split
    qrels: dict[str, dict[str, int]]  # query_id -> doc_id -> relevance
    split: str

    @property
    def doc_ids(self) -> list[str]:
        return list(self.corpus)

    @property
    def query_ids(self) -> list[str]:
        return list(self.queries)


IRDS_PREFIX = "irds:"  # an ir_datasets id, read by lsr.eval.irds


def is_irds(dataset) -> bool:
    return str(dataset).startswith(IRDS_PREFIX)
