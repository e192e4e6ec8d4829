"""The federated leaderboard: its key columns are required, and the renderer keeps federations apart."""

import pytest

from brainbench.errors import ConfigError
from brainbench.leaderboard.render import build_sections, load_leaderboards, render_markdown
from brainbench.leaderboard.store import RunRecord, append_federated_row, read_leaderboard


def _row(missing_p, top1):
    record = RunRecord.new(
        method="pmcmfl",
        method_version="1",
        dataset="world-nsd",
        dataset_version="v1-small",
        split="test",
        subject="subj01+subj02",
        backbone="world-clip:v1",
        seed=0,
        n_train_samples=10,
        n_params=5,
        train_seconds=1.0,
        peak_memory_mb=1.0,
    )
    row = record.to_row({"category_top1_fmri_only@v1": top1})
    row.update(sites=8, rounds=10, missing_p=missing_p, engine="flwr=1.42.0:simulation")
    return row


def test_federated_rows_need_their_key_columns(tmp_path):
    csv = tmp_path / "world-nsd" / "federated.csv"
    row = _row(0.5, 0.1)
    del row["missing_p"]
    with pytest.raises(ConfigError, match="missing_p"):
        append_federated_row(csv, row)
    append_federated_row(csv, _row(0.5, 0.1))
    append_federated_row(csv, _row(0.0, 0.3))
    table = read_leaderboard(csv)
    assert sorted(table["missing_p"].astype(float)) == [0.0, 0.5]


def test_rendered_board_keeps_each_missing_probability_in_its_own_row(tmp_path):
    csv = tmp_path / "world-nsd" / "federated.csv"
    append_federated_row(csv, _row(0.5, 0.1))
    append_federated_row(csv, _row(0.0, 0.3))
    text = render_markdown(build_sections(load_leaderboards(tmp_path)))
    assert "| missing_p |" in text
    assert "0.100" in text and "0.300" in text  # two rows, not one mean of 0.200
    assert "0.200" not in text


def test_a_round_without_every_site_fails_instead_of_averaging_the_rest():
    from types import SimpleNamespace

    from brainbench.federated.server_app import PrototypeFedAvg, SiteFailed

    def reply(error=None):
        return SimpleNamespace(has_error=lambda: error is not None, error=SimpleNamespace(reason=error))

    strategy = PrototypeFedAvg(expected_sites=3)
    ok = [reply(), reply(), reply()]
    assert strategy._all_sites(1, ok, "train") == ok
    with pytest.raises(SiteFailed, match="2 of 3 sites"):
        strategy._all_sites(1, [reply(), reply(), reply("OutOfMemoryError")], "train")
    with pytest.raises(SiteFailed, match="2 of 3 sites"):
        strategy._all_sites(1, [reply(), reply()], "evaluate")
