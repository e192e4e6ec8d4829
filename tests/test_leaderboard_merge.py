"""``brainbench leaderboard merge``: CSVs written on two machines become one, every run once."""

from __future__ import annotations

import pandas as pd
import pytest
from leaderboard_records import make_record

from brainbench.cli import main
from brainbench.errors import DataFormatError
from brainbench.leaderboard.store import PROVENANCE_COLUMNS, append_row, merge_rows, read_leaderboard

B2I = "retrieval_b2i_top1_subset300/world-clip-v1.clip_tokens@v1"
TWO_WAY = "identification_2way/world-clip-v1.clip_image@v1"


def _machine(folder, runs):
    """A leaderboard CSV written by ``append_row`` on one machine: ``runs`` is ``[(run_id, metrics)]``."""
    csv = folder / "world-nsd" / "retrieval.csv"
    for run_id, metrics in runs:
        append_row(csv, make_record(run_id, seed=int(run_id[-1])).to_row(metrics))
    return csv


def test_two_machines_with_overlapping_runs_give_every_row_once(tmp_path, capsys):
    a = _machine(tmp_path / "machine-a", [("run-1", {B2I: 0.25}), ("run-2", {B2I: 0.5})])
    b = _machine(tmp_path / "machine-b", [("run-2", {B2I: 0.5}), ("run-3", {TWO_WAY: 0.75})])
    dst = tmp_path / "merged" / "retrieval.csv"
    assert main(["leaderboard", "merge", str(a), str(b), "--into", str(dst)]) == 0
    assert "3 new rows" in capsys.readouterr().out
    raw = pd.read_csv(dst, dtype=str, keep_default_na=False)
    assert raw["run_id"].tolist() == ["run-1", "run-2", "run-3"]
    assert list(raw.columns) == [*PROVENANCE_COLUMNS, TWO_WAY, B2I]  # the store's column order
    table = read_leaderboard(dst)
    assert table[B2I].tolist()[:2] == [0.25, 0.5] and pd.isna(table[B2I].iloc[2])
    assert table[TWO_WAY].iloc[2] == 0.75
    # merging again changes nothing, and the file is still appendable
    before = dst.read_bytes()
    result = merge_rows(dst, [a, b])
    assert result.added == () and result.already_there == 4 and dst.read_bytes() == before
    append_row(dst, make_record("run-4").to_row({B2I: 0.1}))
    assert read_leaderboard(dst)["run_id"].tolist() == ["run-1", "run-2", "run-3", "run-4"]


def test_numbers_written_differently_are_the_same_row(tmp_path):
    a = _machine(tmp_path / "a", [("run-1", {B2I: 0.5})])
    b = tmp_path / "b.csv"
    raw = pd.read_csv(a, dtype=str, keep_default_na=False)
    raw[B2I] = "0.50"
    raw.drop(columns=["postprocess"]).to_csv(b, index=False)  # an older file: blank postprocess means none
    assert merge_rows(a, [b]).already_there == 1


def test_a_conflicting_run_id_is_refused_naming_the_run_and_both_files(tmp_path, capsys):
    a = _machine(tmp_path / "machine-a", [("run-1", {B2I: 0.25})])
    b = _machine(tmp_path / "machine-b", [("run-1", {B2I: 0.3}), ("run-2", {B2I: 0.5})])
    dst = tmp_path / "merged.csv"
    assert main(["leaderboard", "merge", str(a), str(b), "--into", str(dst)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'run-1'" in err and str(a) in err and str(b) in err and B2I in err
    assert not dst.exists()  # nothing written
    with pytest.raises(DataFormatError, match="run-1"):
        merge_rows(a, [b])
    assert read_leaderboard(a)["run_id"].tolist() == ["run-1"]  # the destination is untouched


def test_a_broken_source_and_a_reported_row_are_refused(tmp_path, capsys):
    a = _machine(tmp_path / "a", [("run-1", {B2I: 0.25})])
    broken = tmp_path / "broken.csv"
    broken.write_text(a.read_text() + "x,y\n" + "1," * 80 + "\n")
    assert main(["leaderboard", "merge", str(broken), "--into", str(tmp_path / "m.csv")]) == 2
    assert "broken.csv" in capsys.readouterr().err
    reported = tmp_path / "reported.csv"
    raw = pd.read_csv(a, dtype=str, keep_default_na=False)
    raw["source"] = "paper:x"
    raw["run_id"] = "run-9"
    raw.to_csv(reported, index=False)
    with pytest.raises(DataFormatError, match="leaderboards/reported"):
        merge_rows(a, [reported])
    raw["source"] = "external"  # scored by brainbench evaluate from predictions made elsewhere: merged
    raw.to_csv(reported, index=False)
    assert merge_rows(a, [reported]).added == ("run-9",)
    assert main(["leaderboard", "merge", str(tmp_path / "absent.csv"), "--into", str(a)]) == 2
    assert "absent.csv" in capsys.readouterr().err


def test_render_and_report_subcommands_wrap_the_modules(tmp_path):
    from brainbench.leaderboard.render import write_readme

    boards = tmp_path / "leaderboards"
    _machine(boards, [("run-1", {B2I: 0.25}), ("run-2", {B2I: 0.5})])
    out = tmp_path / "README.md"
    assert main(["leaderboard", "render", "--leaderboards", str(boards), "--out", str(out)]) == 0
    assert out.read_text() == write_readme(boards, tmp_path / "expected.md").read_text()
    assert "run" in out.read_text() or B2I.split("/")[0] in out.read_text()
    report = tmp_path / "report"
    args = ["--leaderboards", str(boards), "--runs", str(tmp_path / "runs"), "--out", str(report)]
    assert main(["leaderboard", "report", *args]) == 0
    assert (report / "index.html").is_file()


def _append_many(csv: str, n: int) -> None:
    for i in range(n):
        append_row(csv, make_record(f"local-{i}").to_row({B2I: float(i)}))


def _merge_each(csv: str, sources: list[str]) -> None:
    for source in sources:
        merge_rows(csv, [source])


def test_merge_and_bench_appends_at_once_keep_every_row(tmp_path):
    import multiprocessing

    remote = [str(_machine(tmp_path / f"m{i}", [(f"remote-{i}", {TWO_WAY: 0.5})])) for i in range(8)]
    dst = tmp_path / "board.csv"
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_append_many, args=(str(dst), 8)),
        ctx.Process(target=_merge_each, args=(str(dst), remote)),
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    ids = read_leaderboard(dst)["run_id"].tolist()
    assert sorted(ids) == sorted([f"local-{i}" for i in range(8)] + [f"remote-{i}" for i in range(8)])
    assert not list(tmp_path.glob(".*.tmp"))
