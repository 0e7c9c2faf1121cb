"""Summaries of the real benchmarks' annotation files (no images needed), for the primer."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd

from cirlib.data.annotations import load_circo, load_cirr, load_fashioniq

FIQ_CATEGORIES = ("dress", "shirt", "toptee")


def sizes(root: Path) -> pd.DataFrame:
    """Queries and gallery size per benchmark split, read from the annotation files."""
    rows = []
    for split in ("val", "test1"):
        s = load_cirr(root / "cirr", split)
        rows.append({"benchmark": "CIRR", "split": split, "queries": len(s.queries), "gallery": len(s.gallery), "targets/query": 1 if split == "val" else None})
    for split in ("val", "test"):
        c = load_circo(root / "circo", split)
        gts = [len(q.gt_img_ids) for q in c.queries if q.gt_img_ids]
        rows.append({"benchmark": "CIRCO", "split": split, "queries": len(c.queries), "gallery": "COCO unlabeled (~123k)", "targets/query": round(sum(gts) / len(gts), 2) if gts else None})
    for category in FIQ_CATEGORIES:
        f = load_fashioniq(root / "fashioniq", category, "val")
        rows.append({"benchmark": f"FashionIQ {category}", "split": "val", "queries": len(f.queries), "gallery": len(f.gallery), "targets/query": 1})
    return pd.DataFrame(rows)


def circo_ground_truth_counts(root: Path) -> Counter:
    """How many ground truths CIRCO val queries have (|G| per query)."""
    return Counter(len(q.gt_img_ids or ()) for q in load_circo(root / "circo", "val").queries)


def circo_aspects(root: Path) -> Counter:
    """Semantic aspects of CIRCO val queries (a query carries 1 to 6)."""
    return Counter(a for q in load_circo(root / "circo", "val").queries for a in (q.semantic_aspects or ()))


def examples(root: Path, n: int = 3) -> pd.DataFrame:
    """A few real queries of each benchmark, as text."""
    rows = []
    for q in load_cirr(root / "cirr", "val").queries[:n]:
        rows.append({"benchmark": "CIRR", "reference": q.reference, "text": q.caption, "targets": q.target_hard})
    for q in load_circo(root / "circo", "val").queries[:n]:
        rows.append({"benchmark": "CIRCO", "reference": q.reference_img_id, "text": f"{q.shared_concept} | {q.relative_caption}", "targets": f"{len(q.gt_img_ids or ())} ids"})
    for q in load_fashioniq(root / "fashioniq", "dress", "val").queries[:n]:
        rows.append({"benchmark": "FashionIQ dress", "reference": q.candidate, "text": " | ".join(q.captions), "targets": q.target})
    return pd.DataFrame(rows)
