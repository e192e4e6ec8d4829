import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from leaderboard_records import make_record

from brainbench.errors import ConfigError, DataFormatError
from brainbench.leaderboard.render import (
    build_sections,
    load_leaderboards,
    markdown_table,
    metric_info,
    render_markdown,
    write_readme,
)
from brainbench.leaderboard.store import (
    PROVENANCE_COLUMNS,
    REPORTED_COLUMNS,
    append_row,
    read_leaderboard,
    read_reported,
)
from brainbench.metrics.identification import identification_spec
from brainbench.metrics.retrieval import DIRECTIONS, VARIANTS, retrieval_chance, retrieval_spec
from brainbench.metrics.zeroshot import zero_shot_spec

REPO = Path(__file__).resolve().parents[1]
NET = "world-clip:v1.clip_tokens"
B2I = f"retrieval_b2i_top1_subset300/{NET}@v1"
CORR = "corrdist/effnet_lite0@v1"
ID_V1 = "identification_2way/world-clip:v1.clip_image@v1"
ID_V2 = "identification_2way/world-clip:v1.clip_image@v2"


def record(run_id, **changes):
    return make_record(run_id, **changes)


def reported_row(**values):
    base = dict(
        method="paperdecoder",
        dataset="world-nsd",
        task="retrieval",
        split="test",
        subject="subj01",
        postprocess="none",
        source="paper:arXiv:0000.00000",
        reference="Someone 2024",
        page="3 (Table 1)",
        evidence="test",
        note="",
    )
    return {**base, **values}


@pytest.fixture
def boards(tmp_path):
    """world-nsd: ridge (2 seeds), litemind, litemind+blend; ridge@v1 and litemind@v2 of one metric."""
    root = tmp_path / "leaderboards"
    csv = root / "world-nsd" / "retrieval.csv"
    append_row(csv, record("r0", seed=0).to_row({B2I: 0.2, CORR: 0.7, ID_V1: 0.9}))
    append_row(csv, record("r1", seed=1).to_row({B2I: 0.4, CORR: 0.5, ID_V1: 0.8}))
    append_row(csv, record("l0", method="litemind").to_row({B2I: 0.5, CORR: 0.4, ID_V2: 0.95}))
    blended = record("l1", method="litemind", postprocess="blend:0.25")
    append_row(csv, blended.to_row({B2I: 0.6, CORR: 0.45}))
    (root / "reported").mkdir()
    # a paper number in the same metric column must never enter the evaluated table
    pd.DataFrame([reported_row(**{B2I: 0.99})]).to_csv(root / "reported" / "world-nsd.csv", index=False)
    return root


def _table(section, family):
    return next(t for t in section.tables if t.family == family)


def _rows(table):
    return {row.labels: row for row in table.rows}


def test_direction_and_chance_agree_with_the_spec_constructors():
    specs = [
        retrieval_spec(direction=d, variant=v, top_k=k, network=NET, pool=300)
        for d in DIRECTIONS
        for v in VARIANTS
        for k in (1, 5)
    ]
    for spec in specs:
        info = metric_info(spec.id)
        assert info.family == "retrieval" and info.higher_is_better is spec.higher_is_better is True
        variant, top_k = spec.params["variant"], spec.params["top_k"]
        if variant == "full-set":
            assert info.chance is None and info.chance_text == f"{top_k}/N_test"
        else:  # independent value: the evaluator's own chance formula
            assert info.chance == retrieval_chance(variant=variant, top_k=top_k, pool=300, n_items=1000)
    two_way = identification_spec(network=NET)
    assert metric_info(two_way.id).higher_is_better is two_way.higher_is_better
    assert metric_info(two_way.id).chance == 0.5
    zs = zero_shot_spec(network=NET, n_classes=15, top_k=5, prompt="a photo of a {}.", split="test")
    assert metric_info(zs.id).higher_is_better is zs.higher_is_better
    assert math.isclose(metric_info(zs.id).chance, 5 / 15)


@pytest.mark.parametrize(
    ("metric_id", "family", "arrow"),
    [
        ("corrdist/effnet_b1@v1", "feature distance", "↓"),
        ("corrdist/swav@v1", "feature distance", "↓"),
        ("fid/world-clip:v1.clip_image@v1", "distribution", "↓"),
        ("lpips/alex@v2", "feature distance", "↓"),
        ("mse@v1", "low-level", "↓"),
        ("ssim_mindeye@v1", "low-level", "↑"),
        ("pixcorr@v1", "low-level", "↑"),
        ("psnr_frame@v1", "low-level", "↑"),
        ("frame_psnr@v1", "low-level", "↑"),
        ("category_top1_fmri_only@v1", "category decoding", "↑"),
        ("frame_ssim_mindvideo@v1", "low-level", "↑"),
        ("clip_pcc/world-clip:v1.clip_image@v1", "temporal", "↑"),
        ("nway_frame_top1_50way/world-clip:v1@v1", "N-way classification", "↑"),
        ("fidelity@v1", "other", ""),  # a prefix only matches at a word boundary
        ("mystery_metric/net@v3", "other", ""),
    ],
)
def test_prefix_registry(metric_id, family, arrow):
    info = metric_info(metric_id)
    assert (info.family, info.arrow) == (family, arrow)


def test_nway_chance_and_unknown_chance():
    assert metric_info("nway_frame_top1_50way/world-clip:v1@v1").chance == 1 / 50
    assert metric_info("ssim@v1").chance is None and metric_info("ssim@v1").chance_text == ""


def test_sections_mean_over_runs_bold_by_direction_and_versions_apart(boards):
    sections = build_sections(load_leaderboards(boards))
    assert [(s.dataset, s.reported) for s in sections] == [("world-nsd", False), ("world-nsd", True)]
    evaluated = sections[0]
    assert evaluated.n_rows == 4 and [t.family for t in evaluated.tables] == [
        "retrieval",
        "2-way identification",
        "feature distance",
    ]
    ridge = ("ridge", "1", "subj01", "world-clip:v1", "none", "2")
    lite = ("litemind", "1", "subj01", "world-clip:v1", "none", "1")
    blend = ("litemind", "1", "subj01", "world-clip:v1", "blend:0.25", "1")
    retrieval = _rows(_table(evaluated, "retrieval"))
    assert set(retrieval) == {ridge, lite, blend}  # post-processed runs are their own entry
    assert math.isclose(retrieval[ridge].values[0], 0.3)  # mean of seeds 0.2 and 0.4, never the best seed
    # bold goes to the best evaluated entry; the paper's 0.99 in the same column is not a contender
    assert [retrieval[k].best[0] for k in (ridge, lite, blend)] == [False, False, True]
    distance = _rows(_table(evaluated, "feature distance"))
    assert math.isclose(distance[ridge].values[0], 0.6)
    assert [distance[k].best[0] for k in (ridge, lite, blend)] == [False, True, False]  # lower is better
    ident = _table(evaluated, "2-way identification")
    assert [m.metric_id for m in ident.metrics] == [ID_V1, ID_V2]  # two versions, two columns
    by_label = _rows(ident)
    assert math.isclose(by_label[ridge].values[0], 0.85) and math.isnan(by_label[ridge].values[1])
    assert math.isnan(by_label[lite].values[0]) and by_label[lite].values[1] == 0.95
    assert blend not in by_label  # no value in this family: no row
    reported = sections[1]
    (row,) = _table(reported, "retrieval").rows
    assert row.values == (0.99,) and row.best == (False,) and "paper:arXiv:0000.00000" in row.labels


def test_a_seed_run_again_replaces_its_earlier_row(boards):
    append_row(boards / "world-nsd" / "retrieval.csv", record("r2", seed=1).to_row({B2I: 0.6}))
    retrieval = _rows(_table(build_sections(load_leaderboards(boards))[0], "retrieval"))
    ridge = ("ridge", "1", "subj01", "world-clip:v1", "none", "2")
    assert math.isclose(retrieval[ridge].values[0], 0.4)  # seeds 0 (0.2) and 1 (latest: 0.6), not 0.2/0.4/0.6


def test_a_ddp_row_never_replaces_the_single_process_row_of_its_seed(boards):
    ddp = {**record("r3", seed=1).to_row({B2I: 0.9}), "distributed": "ddp:1x2"}
    append_row(boards / "world-nsd" / "retrieval.csv", ddp)
    retrieval = _rows(_table(build_sections(load_leaderboards(boards))[0], "retrieval"))
    single = ("ridge", "1", "subj01", "world-clip:v1", "", "none", "2")
    assert math.isclose(retrieval[single].values[0], 0.3)  # seeds 0 and 1, untouched by the DDP run
    assert retrieval[("ridge", "1", "subj01", "world-clip:v1", "ddp:1x2", "none", "1")].values[0] == 0.9


def test_markdown_has_arrows_bold_chance_and_separate_reported_section(boards):
    text = render_markdown(build_sections(load_leaderboards(boards)))
    assert "## world-nsd · retrieval\n" in text and "## world-nsd · retrieval (as reported)" in text
    assert "dataset version `v1-small`, split `shared500/test`, 4 runs" in text
    retrieval = markdown_table(_table(build_sections(load_leaderboards(boards))[0], "retrieval"))
    lines = retrieval.splitlines()
    labels = "| method | method_version | subject | backbone | postprocess | runs |"
    assert lines[0].startswith(f"{labels} `retrieval_b2i_top1_subset300` ↑")
    assert f"<sub>{NET} @v1</sub>" in lines[0]
    assert "| ridge | 1 | subj01 | world-clip:v1 | none | 2 | 0.300 |" in lines
    assert "| litemind | 1 | subj01 | world-clip:v1 | blend:0.25 | 1 | **0.600** |" in lines
    assert lines[-1] == "| *chance* |  |  |  |  |  | 0.003 (1/300) |"
    assert "`corrdist` ↓<br><sub>effnet_lite0 @v1</sub>" in text and "| **0.400** |" in text
    for version in (1, 2):
        assert f"<sub>world-clip:v1.clip_image @v{version}</sub>" in text
    assert text.count("**0.990**") == 0  # reported rows are never bold


def test_write_readme_of_the_repository_leaderboards(tmp_path):
    out = write_readme(REPO / "leaderboards", tmp_path / "README.md")
    text = out.read_text()
    assert "## world-nsd · retrieval" in text and "## nsd · retrieval (as reported)" in text
    assert "| 0.943 |" in text.replace(" | — |", " |") and "0.946" in text
    assert "No leaderboard rows yet" in render_markdown(build_sections(load_leaderboards(tmp_path / "none")))


def test_shipped_reported_nsd_csv():
    table = read_reported(REPO / "leaderboards" / "reported" / "nsd.csv")
    assert list(table.columns[: len(REPORTED_COLUMNS)]) == list(REPORTED_COLUMNS)
    assert table["source"].str.match(r"^(paper|repo):").all() and (table["page"] != "").all()
    metrics = [c for c in table.columns if c not in REPORTED_COLUMNS]
    assert all(metric_info(m).family != "other" for m in metrics)
    values = table[metrics].to_numpy().ravel()
    values = values[~pd.isna(values)]
    assert ((values > 0) & (values <= 1)).all()  # fractions, not percentages
    lite = table[table["method"] == "litemind"].set_index("source")
    column = "retrieval_b2i_top1_perquery300/ViT-L-14:openai.clip_tokens@v1"
    assert lite.loc["paper:arXiv:2312.03781v1", column] == 0.943  # Lite-Mind abstract v1
    assert lite.loc["paper:arXiv:2312.03781v4", column] == 0.946  # Lite-Mind abstract v4
    me1 = table[(table["method"] == "mindeye1") & (table["task"] == "reconstruction")].iloc[0]
    # metrics.md §1.8, MindEye1 Table 1: .309 / .323 / 94.7 / 97.8 / 93.8 / 94.1 / .645 / .367
    assert [
        me1[c]
        for c in (
            "pixcorr_mindeye@v1",
            "ssim_mindeye@v1",
            "identification_2way/alexnet:2@v1",
            "identification_2way/alexnet:5@v1",
            "identification_2way/inception_v3@v1",
            "identification_2way/clip_vit_l14@v1",
            "corrdist/effnet_b1@v1",
            "corrdist/swav@v1",
        )
    ] == [0.309, 0.323, 0.947, 0.978, 0.938, 0.941, 0.645, 0.367]
    assert me1["postprocess"] == "best_of:16"
    assert set(table.loc[table["method"] == "mindeye2", "postprocess"]) == {"blend:0.25", "none"}


def test_reported_and_postprocess_validation(tmp_path):
    csv = tmp_path / "board.csv"
    with pytest.raises(ConfigError, match="leaderboards/reported"):
        append_row(csv, {**record("a").to_row(), "source": "paper:arXiv:1234"})
    with pytest.raises(ConfigError, match="postprocess flag"):
        record("b", postprocess="blend 0.5")
    with pytest.raises(ConfigError, match="RunRecord is scored by brainbench"):
        record("c", source="paper:x")
    assert not csv.exists()
    bad = tmp_path / "reported.csv"
    pd.DataFrame([reported_row(source="brainbench")]).to_csv(bad, index=False)
    with pytest.raises(DataFormatError, match="paper:<ref> or repo:<ref>"):
        read_reported(bad)
    pd.DataFrame([{**reported_row(), "top1": 0.5}]).to_csv(bad, index=False)
    with pytest.raises(DataFormatError, match="not metric ids"):
        read_reported(bad)


def test_legacy_csv_gains_new_columns_by_an_atomic_union_rewrite(tmp_path):
    csv = tmp_path / "board.csv"
    legacy = [c for c in PROVENANCE_COLUMNS if c not in ("postprocess", "source")]
    old = {**{k: v for k, v in record("old").to_row().items() if k in legacy}, B2I: 0.1 + 0.2}
    pd.DataFrame([old]).reindex(columns=[*legacy, B2I]).to_csv(csv, index=False)
    append_row(csv, record("new", postprocess="blend:0.5").to_row({ID_V2: 0.75, B2I: 0.5}))
    raw = pd.read_csv(csv, dtype=str, keep_default_na=False)
    assert list(raw.columns) == [*PROVENANCE_COLUMNS, ID_V2, B2I]
    assert raw["postprocess"].tolist() == ["", "blend:0.5"] and raw["source"].tolist() == ["", "brainbench"]
    table = read_leaderboard(csv)
    assert table["postprocess"].tolist() == ["none", "blend:0.5"]
    assert table["source"].tolist() == ["brainbench", "brainbench"]
    assert table[B2I].iloc[0] == 0.1 + 0.2 and pd.isna(table[ID_V2].iloc[0])
    assert not list(tmp_path.glob("*.tmp"))
    assert csv.stat().st_mode & 0o644 == 0o644  # published readable, not mkstemp's 0600


APPENDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from brainbench.leaderboard.store import RunRecord, append_row
    csv, worker, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    Path(csv + "." + worker + ".ready").touch()  # start together: wait until both workers are up
    while not all(Path(csv + "." + w + ".ready").exists() for w in "ab"):
        time.sleep(0.01)
    flag, metric = ("none", "m@v1") if worker == "a" else ("blend:0.25", "m@v2")
    for i in range(count):
        rec = RunRecord(
            run_id=f"{worker}-{i}", time_utc="t", method=worker, method_version="1", dataset="d",
            dataset_version="1", split="test", subject="subj01", backbone="b", seed=i, n_train_samples=1,
            n_params=1, train_seconds=0.0, peak_memory_mb=0.0, git_sha="x", package_versions="y",
            postprocess=flag,
        )
        append_row(csv, rec.to_row({metric: float(i), f"only_{worker}@v1": i / 7}))
    """
)


def test_two_processes_appending_at_once_keep_every_row(tmp_path):
    csv = tmp_path / "board.csv"
    count = 30
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, str(csv), worker, str(count)], cwd=REPO, stderr=subprocess.PIPE
        )
        for worker in ("a", "b")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    table = read_leaderboard(csv)
    assert len(table) == 2 * count and table["run_id"].is_unique
    for worker, flag, mine, other in (("a", "none", "m@v1", "m@v2"), ("b", "blend:0.25", "m@v2", "m@v1")):
        rows = table[table["method"] == worker].sort_values("seed")
        assert rows["run_id"].tolist() == [f"{worker}-{i}" for i in range(count)]
        assert rows[mine].tolist() == [float(i) for i in range(count)] and rows[other].isna().all()
        assert rows[f"only_{worker}@v1"].tolist() == [i / 7 for i in range(count)]  # bit-exact round trip
        assert (rows["postprocess"] == flag).all()
    assert not list(tmp_path.glob("*.tmp"))
