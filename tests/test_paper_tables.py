"""Published-number tables (data/paper_tables): they load, every row has a source, every number
matches shared/papers/REFERENCE.md, paper_gain is right, and every validation error names the file
and the line."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pytest

from cirlib.config import REPO_ROOT
from cirlib.metrics import circo_metrics, cirr_metrics, fashioniq_metrics
from cirlib.paper_tables import (
    PAPER_TABLES_DIR,
    SOURCE_KINDS,
    PaperTableError,
    all_tables,
    list_tables,
    load_table,
    metric_columns,
    paper_gain,
)

REFERENCE = REPO_ROOT.parent / "shared" / "papers" / "REFERENCE.md"
TABLES = {
    "cirr_test",
    "circo_test",
    "fashioniq_val",
    "ipcir_ablation_cirr_test",
    "ipcir_ablation_circo_test",
}
FOCO = "FoCo reading note (arXiv 2607.00374)"
BACKBONES = {"L/14": "ViT-L/14", "G/14": "ViT-G/14"}


# ------------------------------------------------------------------------------------ helpers
def raw_rows(name: str) -> list[dict[str, str]]:
    """A committed table as the exact text of its cells (no float conversion)."""
    with (PAPER_TABLES_DIR / f"{name}.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def find_raw(name: str, source_table: str, method: str, backbone: str, **extra: str) -> dict[str, str]:
    rows = [
        r
        for r in raw_rows(name)
        if r["source_table"] == source_table
        and r["method"] == method
        and r["backbone"] == backbone
        and all(r[k] == v for k, v in extra.items())
    ]
    assert len(rows) == 1, (name, source_table, method, backbone, extra, len(rows))
    return rows[0]


def md_tables(text: str) -> dict[str, list[list[str]]]:
    """REFERENCE.md's markdown tables keyed by their header line; rows as lists of stripped cells,
    without the header and the |---| rule."""
    tables: dict[str, list[list[str]]] = {}
    block: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append(line)
            continue
        if len(block) > 2:
            tables[block[0]] = [[c.strip() for c in row.strip().strip("|").split("|")] for row in block[2:]]
        block = []
    return tables


def md_table(tables: dict[str, list[list[str]]], header_start: str) -> list[list[str]]:
    matches = [rows for header, rows in tables.items() if header.startswith(header_start)]
    assert len(matches) == 1, f"REFERENCE.md: {len(matches)} tables start with {header_start!r}"
    return matches[0]


def cells(text: str) -> list[str]:
    """'25.0/53.3/66.7/–' -> ['25.0', '53.3', '66.7', ''] (a dash is 'not published', empty here)."""
    return ["" if v in {"–", "-", "—"} else v for v in text.split("/")]


def method_name(cell: str) -> str:
    return cell.replace("**", "").strip()


@pytest.fixture(scope="module")
def reference_text() -> str:
    if not REFERENCE.is_file():
        pytest.skip(f"{REFERENCE} not found: the transcription checks need shared/papers beside the checkout")
    return REFERENCE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def reference_tables(reference_text: str) -> dict[str, list[list[str]]]:
    return md_tables(reference_text)


# ------------------------------------------------------------------------- committed tables
def test_every_committed_table_loads_and_validates() -> None:
    assert set(list_tables()) == TABLES
    tables = all_tables()
    assert set(tables) == TABLES
    for name, df in tables.items():
        assert len(df) > 0, name
        metrics = metric_columns(df)
        assert metrics, name
        for column in metrics:
            assert df[column].dtype == "float64", (name, column)
            values = df[column].dropna()
            assert ((values >= 0) & (values <= 100)).all(), (name, column)
        assert df[metrics].notna().any(axis=1).all(), name


def test_row_counts() -> None:
    counts = {name: len(df) for name, df in all_tables().items()}
    assert counts == {
        "cirr_test": 17,
        "circo_test": 19,
        "fashioniq_val": 11,
        "ipcir_ablation_cirr_test": 4,
        "ipcir_ablation_circo_test": 4,
    }


def test_every_row_has_a_source() -> None:
    for name, df in all_tables().items():
        for row in df.itertuples():
            assert row.source_paper and row.source_table, (name, row)
            assert row.source_kind in SOURCE_KINDS, (name, row)
            assert row.method and row.backbone, (name, row)
        # REFERENCE.md's [S] numbers are all PrediCIR's comparison table; every other row is [P]
        secondary = df[df["source_kind"] == "secondary"]
        assert set(secondary["source_paper"]) <= {"PrediCIR (CVPR 2025)"}, name


def test_metric_columns_are_the_keys_cirlib_score_prints() -> None:
    ranking = [[f"img{i}" for i in range(60)]]
    cirr = cirr_metrics(ranking, ["img0"], subset_rankings=[["img0", "img1", "img2"]])
    circo = circo_metrics(ranking, [["img0"]], ["img0"])
    fiq = fashioniq_metrics(
        {c: ranking for c in ("dress", "shirt", "toptee")},
        {c: ["img0"] for c in ("dress", "shirt", "toptee")},
    )
    tables = all_tables()
    assert set(metric_columns(tables["cirr_test"])) == set(cirr)
    assert set(metric_columns(tables["circo_test"])) == {k for k in circo if k.startswith("map@")}
    assert set(metric_columns(tables["fashioniq_val"])) == set(fiq)
    ablation = cirr_metrics(ranking, ["img0"], ks=(1, 2, 5, 10, 50))
    assert set(metric_columns(tables["ipcir_ablation_cirr_test"])) == set(ablation)
    assert metric_columns(tables["ipcir_ablation_circo_test"]) == metric_columns(tables["circo_test"])


def test_not_published_is_nan() -> None:
    df = load_table("cirr_test")
    lincir = df[(df["method"] == "LinCIR") & (df["source_table"] == FOCO)]
    assert lincir["recall@1"].item() == 25.0
    assert math.isnan(lincir["recall@50"].item())
    assert math.isnan(lincir["recall_subset@1"].item())


def test_backbones_are_normalised() -> None:
    for name, df in all_tables().items():
        assert set(df["backbone"]) <= {"ViT-L/14", "ViT-G/14", "Large", "Base"}, name


# ------------------------------------------------------------ transcription vs REFERENCE.md
def test_predicir_secondary_table_matches_reference(reference_tables: dict[str, list[list[str]]]) -> None:
    rows = md_table(reference_tables, "| Method (ViT-L/14)")
    assert len(rows) == 5
    for row in rows:
        method = method_name(row[0])
        cirr = find_raw("cirr_test", FOCO, method, "ViT-L/14")
        assert [cirr[f"recall@{k}"] for k in (1, 5, 10, 50)] == cells(row[1]), method
        assert [cirr[f"recall_subset@{k}"] for k in (1, 2, 3)] == ["", "", ""]
        circo = find_raw("circo_test", FOCO, method, "ViT-L/14")
        assert [circo[f"map@{k}"] for k in (5, 10, 25, 50)] == cells(row[2]), method
        fiq = find_raw("fashioniq_val", FOCO, method, "ViT-L/14")
        for category, cell in zip(("dress", "toptee", "shirt", "average"), row[3:7], strict=True):
            assert [fiq[f"{category}/recall@{k}"] for k in (10, 50)] == cells(cell), (method, category)
        for r in (cirr, circo, fiq):
            assert r["source_kind"] == "secondary" and r["source_paper"] == "PrediCIR (CVPR 2025)"
    for name in ("cirr_test", "circo_test", "fashioniq_val"):
        assert sum(r["source_table"] == FOCO for r in raw_rows(name)) == 5, name


def test_ipcir_table1_matches_reference(reference_tables: dict[str, list[list[str]]]) -> None:
    rows = md_table(reference_tables, "| Backbone | Method | CIRCO")
    assert len(rows) == 10
    for row in rows:
        backbone, method = BACKBONES[row[0]], method_name(row[1])
        circo = find_raw("circo_test", "Table 1", method, backbone)
        assert [circo[f"map@{k}"] for k in (5, 10, 25, 50)] == cells(row[2]), (method, backbone)
        cirr = find_raw("cirr_test", "Table 1", method, backbone)
        assert [cirr[f"recall@{k}"] for k in (1, 5, 10, 50)] == cells(row[3]), (method, backbone)
        assert [cirr[f"recall_subset@{k}"] for k in (1, 2, 3)] == cells(row[4]), (method, backbone)
        assert circo["source_kind"] == cirr["source_kind"] == "primary"
    for name in ("cirr_test", "circo_test"):
        assert sum(r["source_table"] == "Table 1" for r in raw_rows(name)) == 10, name


def test_ipcir_table2_matches_reference(reference_tables: dict[str, list[list[str]]]) -> None:
    rows = md_table(reference_tables, "| Method | Shirt | Dress | Toptee | Avg")
    assert len(rows) == 4
    for row in rows:
        fiq = find_raw("fashioniq_val", "Table 2", method_name(row[0]), "ViT-G/14")
        for category, cell in zip(("shirt", "dress", "toptee", "average"), row[1:5], strict=True):
            assert [fiq[f"{category}/recall@{k}"] for k in (10, 50)] == cells(cell), (row[0], category)
    assert sum(r["source_table"] == "Table 2" for r in raw_rows("fashioniq_val")) == 4


def test_ipcir_table3_ablation_matches_reference(reference_tables: dict[str, list[list[str]]]) -> None:
    rows = md_table(reference_tables, "| Config | CIRR")
    assert [r[0] for r in rows] == ["LDRE-G", "+PI", "+PI+RP", "+PI+RP+BM"]
    for row in rows:
        cirr = find_raw("ipcir_ablation_cirr_test", "Table 3", "LDRE", "ViT-G/14", configuration=row[0])
        assert [cirr[f"recall@{k}"] for k in (1, 2, 5, 10, 50)] == cells(row[1]), row[0]
        circo = find_raw("ipcir_ablation_circo_test", "Table 3", "LDRE", "ViT-G/14", configuration=row[0])
        assert [circo[f"map@{k}"] for k in (5, 10, 25, 50)] == cells(row[2]), row[0]
    assert len(raw_rows("ipcir_ablation_cirr_test")) == len(raw_rows("ipcir_ablation_circo_test")) == 4


def test_prose_and_section4_numbers_match_reference(reference_text: str) -> None:
    """Rows from REFERENCE.md's prose (DiffComp note) and §4 (lincir#8, MagicLens README)."""

    def line_with(start: str) -> str:
        found = [line for line in reference_text.splitlines() if line.startswith(start)]
        assert len(found) == 1, start
        return found[0]

    def joined(row: dict[str, str], columns: list[str]) -> str:
        return "/".join(row[c] for c in columns)

    cirr4 = ["recall@1", "recall@5", "recall@10"]
    map4 = ["map@5", "map@10", "map@25", "map@50"]
    avg = ["average/recall@10", "average/recall@50"]

    diffcomp = line_with("- **Results [S]**")
    cirr = find_raw("cirr_test", "DiffComp reading note", "PrediCIR", "ViT-L/14")
    fiq = find_raw("fashioniq_val", "DiffComp reading note", "PrediCIR", "ViT-L/14")
    assert f"FashionIQ Avg {joined(fiq, avg)} and CIRR {joined(cirr, cirr4[:2])}" in diffcomp

    lincir = line_with("| LinCIR, `navervision/lincir`")
    paper = find_raw("circo_test", "navervision/lincir#8", "LinCIR", "ViT-L/14")
    demo = find_raw("circo_test", "navervision/lincir#8", "LinCIR (demo model)", "ViT-L/14")
    assert f"{joined(paper, map4)} (demo model: {joined(demo, map4)}) [P lincir#8]" in lincir
    cirr = find_raw("cirr_test", "navervision/lincir#8", "LinCIR", "ViT-L/14")
    subset = ["recall_subset@1", "recall_subset@2", "recall_subset@3"]
    assert f"{joined(cirr, cirr4)}; Rs {joined(cirr, subset)} [P lincir#8]" in lincir
    fiq = find_raw("fashioniq_val", "navervision/lincir#8", "LinCIR", "ViT-L/14")
    assert f"{joined(fiq, avg)} [P lincir#8]" in lincir

    magiclens = line_with("| MagicLens, `google-deepmind/magiclens`")
    large = find_raw("circo_test", "google-deepmind/magiclens README", "MagicLens", "Large")
    base = find_raw("circo_test", "google-deepmind/magiclens README", "MagicLens", "Base")
    assert f"Large {joined(large, map4)}; Base {joined(base, map4)}" in magiclens


def test_no_number_is_absent_from_reference(reference_text: str) -> None:
    """Never invent a number: every metric cell's text occurs in REFERENCE.md as a whole number."""
    for name in TABLES:
        for line, row in enumerate(raw_rows(name), start=2):
            for column, text in row.items():
                if text and re.search(r"@\d+$", column):
                    assert re.search(rf"(?<![\d.]){re.escape(text)}(?![\d])", reference_text), (
                        name,
                        line,
                        column,
                        text,
                    )


def test_source_urls_come_from_reference(reference_text: str) -> None:
    for name in TABLES:
        for row in raw_rows(name):
            assert not row["source_url"] or row["source_url"] in reference_text, (name, row["source_url"])


def test_ablation_endpoints_equal_table1() -> None:
    """IP-CIR Table 3's LDRE-G and +PI+RP+BM rows repeat Table 1's LDRE / LDRE+IP-CIR on ViT-G/14."""
    pairs = {"LDRE-G": "LDRE", "+PI+RP+BM": "LDRE+IP-CIR"}
    for ablation, table1 in (
        ("ipcir_ablation_cirr_test", "cirr_test"),
        ("ipcir_ablation_circo_test", "circo_test"),
    ):
        shared = [
            c for c in raw_rows(ablation)[0] if c in raw_rows(table1)[0] and c.startswith(("recall", "map"))
        ]
        assert shared
        for configuration, method in pairs.items():
            a = find_raw(ablation, "Table 3", "LDRE", "ViT-G/14", configuration=configuration)
            t = find_raw(table1, "Table 1", method, "ViT-G/14")
            assert [a[c] for c in shared] == [t[c] for c in shared], (ablation, configuration)


# --------------------------------------------------------------------------------- paper_gain
def test_paper_gain_hand_checked() -> None:
    # PrediCIR minus Pic2Word, CIRR R@1, ViT-L/14: both in the FoCo note, which is the one source
    # used although PrediCIR also has a DiffComp row
    assert paper_gain("cirr_test", "PrediCIR", "Pic2Word", "recall@1", "ViT-L/14") == pytest.approx(
        27.2 - 23.9
    )
    assert paper_gain("circo_test", "PrediCIR", "LinCIR", "map@5", "ViT-L/14") == pytest.approx(15.7 - 12.6)
    assert paper_gain("circo_test", "LDRE+IP-CIR", "LDRE", "map@5", "ViT-G/14") == pytest.approx(
        32.75 - 31.12
    )
    assert paper_gain("circo_test", "LDRE+IP-CIR", "LDRE", "map@5", "ViT-L/14") == pytest.approx(
        26.43 - 23.35
    )
    assert paper_gain("cirr_test", "LDRE+IP-CIR", "LDRE", "recall_subset@1", "ViT-G/14") == pytest.approx(
        69.95 - 68.82
    )
    assert paper_gain(
        "fashioniq_val", "LinCIR+IP-CIR", "LinCIR", "average/recall@10", "ViT-G/14"
    ) == pytest.approx(45.74 - 45.11)
    # a configuration name selects an ablation row
    assert paper_gain(
        "ipcir_ablation_cirr_test", "+PI+RP+BM", "LDRE-G", "recall@1", "ViT-G/14"
    ) == pytest.approx(39.25 - 36.15)
    assert paper_gain("ipcir_ablation_circo_test", "+PI", "LDRE-G", "map@5", "ViT-G/14") == pytest.approx(
        31.06 - 31.12
    )
    # a loaded table works too, and source_kind narrows an otherwise ambiguous choice
    df = load_table("cirr_test")
    assert paper_gain(df, "LinCIR", "SEARLE", "recall@1", "ViT-L/14", source_kind="primary") == pytest.approx(
        25.04 - 24.24
    )


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("cirr_test", "LinCIR", "SEARLE", "recall@1", "ViT-L/14"), "'LinCIR' is ambiguous, 2 rows"),
        (
            ("ipcir_ablation_cirr_test", "LDRE", "LDRE-G", "recall@1", "ViT-G/14"),
            "'LDRE' is ambiguous, 4 rows",
        ),
        (
            ("cirr_test", "PrediCIR", "LinCIR", "recall@50", "ViT-L/14"),
            "recall@50 of 'PrediCIR' was not published",
        ),
        (("cirr_test", "PrediCIR", "Pic2Word", "recall@1", "ViT-G/14"), "no row for 'PrediCIR'"),
        (("cirr_test", "CIG", "LDRE", "recall@1", "ViT-G/14"), "no row for 'CIG'"),
        (("cirr_test", "PrediCIR", "Pic2Word", "map@5", "ViT-L/14"), "no metric 'map@5'"),
        (("cirr_test", "PrediCIR", "Pic2Word", "recall@1", "ViT-L/14", "primary"), "no row for 'PrediCIR'"),
        (
            ("cirr_test", "PrediCIR", "Pic2Word", "recall@1", "ViT-L/14", "tertiary"),
            "source_kind must be one of",
        ),
    ],
)
def test_paper_gain_errors(args: tuple[str, ...], fragment: str) -> None:
    with pytest.raises(PaperTableError, match=re.escape(fragment)):
        paper_gain(*args)


def test_paper_gain_refuses_two_shared_sources(tmp_path: Path) -> None:
    header = "method,backbone,recall@1,source_paper,source_table,source_kind,source_url,note\n"
    body = "A,ViT-L/14,20,P,Table 1,primary,,\nB,ViT-L/14,10,P,Table 1,primary,,\nA,ViT-L/14,21,Q,Table 4,primary,,\nB,ViT-L/14,11,Q,Table 4,primary,,\n"
    (tmp_path / "two.csv").write_text(header + body)
    with pytest.raises(PaperTableError, match="appear together in 2 sources"):
        paper_gain(load_table("two", tmp_path), "A", "B", "recall@1", "ViT-L/14")


# ------------------------------------------------------------------------ validation errors
GOOD = (
    "method,backbone,recall@1,recall@5,source_paper,source_table,source_kind,source_url,note\n"
    "A,ViT-L/14,20.5,40,P (CVPR 2025),Table 1,primary,,\n"
    'B,ViT-L/14,21.5,,P (CVPR 2025),Table 1,secondary,https://example.org,"a note, with a comma"\n'
)


def test_good_temporary_table_loads(tmp_path: Path) -> None:
    (tmp_path / "good.csv").write_text(GOOD)
    assert list_tables(tmp_path) == ["good"]
    df = load_table("good", tmp_path)
    assert list(df["method"]) == ["A", "B"]
    assert math.isnan(df["recall@5"].iloc[1])
    assert df["source_url"].iloc[0] == "" and df["note"].iloc[1] == "a note, with a comma"
    assert set(all_tables(tmp_path)) == {"good"}


def _replace_line(text: str, line: int, new: str) -> str:
    lines = text.splitlines()
    lines[line - 1] = new
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "mutate, line, fragment",
    [
        (lambda t: t.replace(",source_kind", ",kind"), 1, "missing required column(s) ['source_kind']"),
        (lambda t: t.replace("recall@5", "R@5"), 1, "unknown column(s) ['R@5']"),
        (lambda t: t.replace("recall@5", "recall@1"), 1, "duplicate column(s) ['recall@1']"),
        (lambda t: t.replace("20.5", "120.5"), 2, "recall@1 is 120.5, outside [0, 100]"),
        (lambda t: t.replace("20.5", "-1"), 2, "outside [0, 100]"),
        (lambda t: t.replace("21.5", "–"), 3, "recall@1 is '–', not a number"),
        (lambda t: t.replace("21.5", "nan"), 3, "outside [0, 100]"),
        (lambda t: t.replace(",secondary,", ",tertiary,"), 3, "source_kind is 'tertiary'"),
        (lambda t: t.replace(",primary,", ",,"), 2, "source_kind is ''"),
        (lambda t: t.replace("20.5,40,P (CVPR 2025)", "20.5,40,"), 2, "source_paper is empty"),
        (
            lambda t: t.replace("21.5,,P (CVPR 2025),Table 1", "21.5,,P (CVPR 2025),"),
            3,
            "source_table is empty",
        ),
        (lambda t: t.replace("B,ViT-L/14", "A,ViT-L/14"), 3, "duplicate of line 2"),
        (lambda t: t.replace("B,ViT-L/14", ",ViT-L/14"), 3, "method is empty"),
        (lambda t: t.replace("21.5,,", ",,"), 3, "no metric value"),
        (lambda t: t.replace("A,ViT-L/14", "A ,ViT-L/14"), 2, "leading or trailing whitespace"),
        (lambda t: _replace_line(t, 3, "B,ViT-L/14,21.5"), 3, "3 fields, the header has 9"),
    ],
)
def test_validation_errors_name_file_and_line(tmp_path: Path, mutate, line: int, fragment: str) -> None:
    path = tmp_path / "bad.csv"
    bad = mutate(GOOD)
    assert bad != GOOD
    path.write_text(bad)
    with pytest.raises(PaperTableError) as info:
        load_table("bad", tmp_path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert fragment in message, message
    assert isinstance(info.value, ValueError)


def test_configuration_joins_the_key(tmp_path: Path) -> None:
    header = "method,backbone,configuration,map@5,source_paper,source_table,source_kind,source_url,note\n"
    rows = "LDRE,ViT-G/14,base,30,P,Table 3,primary,,\nLDRE,ViT-G/14,+PI,31,P,Table 3,primary,,\n"
    (tmp_path / "ablation.csv").write_text(header + rows)
    assert len(load_table("ablation", tmp_path)) == 2
    (tmp_path / "ablation.csv").write_text(header + rows + "LDRE,ViT-G/14,+PI,32,P,Table 3,primary,,\n")
    with pytest.raises(PaperTableError, match=r"ablation\.csv:4: duplicate of line 3"):
        load_table("ablation", tmp_path)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(PaperTableError, match=r"no such paper table \(known: none\)"):
        load_table("nope", tmp_path)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(PaperTableError, match=r"empty\.csv:1: empty file"):
        load_table("empty", tmp_path)
    (tmp_path / "nometric.csv").write_text(
        "method,backbone,source_paper,source_table,source_kind,source_url,note\n"
    )
    with pytest.raises(PaperTableError, match=r"nometric\.csv:1: no metric column"):
        load_table("nometric", tmp_path)
