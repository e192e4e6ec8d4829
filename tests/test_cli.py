"""The ``brainbench`` command line: listing, and clean exit code 2 with a message on user errors."""

import pytest
from raw_fixtures import fixture_module

from brainbench import __version__
from brainbench.backbones.networks import list_networks
from brainbench.cli import build_parser, main
from brainbench.data.sources import ADAPTERS
from brainbench.generators import GENERATORS
from brainbench.methods import list_methods
from brainbench.metrics.preprocess import list_chains
from brainbench.world.config import WORLD_PRESETS

fx = fixture_module("nsd")


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for method in list_methods():
        assert f"method {method}" in out
    assert "configs: nsd, world" in out
    assert "world-nsd" in out and "nsd" in out
    assert all(preset in out for preset in WORLD_PRESETS)
    lines = {
        line.split(": ")[0]: line.split(": ")[1].split(", ") for line in out.splitlines() if ": " in line
    }
    assert set(lines["adapters"]) == set(ADAPTERS) == {"nsd", "god", "cc2017", "mindeye"}
    assert set(lines["generators"]) == set(GENERATORS)
    assert set(lines["networks"]) == set(list_networks())
    assert set(lines["metric chains"]) == set(list_chains())


def test_version(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.strip() == f"brainbench {__version__}"


def test_prepare_options_come_from_the_adapter_signature():
    parser = build_parser(["prepare"])
    god = parser._subparsers._group_actions[0].choices["prepare"]._subparsers._group_actions[0].choices["god"]
    options = {o: a for a in god._actions for o in a.option_strings}
    assert options["--dataset-name"].dest == "dataset" and options["--dataset-name"].default == "god"
    assert options["--image-size"].type is int and options["--root"].required
    assert all(a.help for a in god._actions), "every option has help"


def test_bench_unknown_method_exits_2_with_a_message(capsys, tmp_path):
    code = main(
        [
            "bench",
            "--method",
            "nope",
            "--home",
            str(tmp_path / "home"),
            "--quiet",
            "--runs",
            str(tmp_path / "runs"),
            "--leaderboards",
            str(tmp_path / "boards"),
        ]
    )
    assert code == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("brainbench: error: unknown method 'nope'; available: ")
    assert "litemind" in captured.err and "ridge" in captured.err
    assert "Traceback" not in captured.err
    assert not (tmp_path / "home").exists()  # failed before generating or preparing anything


def test_bench_unknown_config_name(capsys, tmp_path):
    code = main(["bench", "--method", "ridge", "--config", "huge", "--home", str(tmp_path), "--quiet"])
    assert code == 2
    assert "ridge has no 'huge' config; available: nsd, world" in capsys.readouterr().err


def test_prepare_on_an_empty_root_names_the_missing_nsd_file(capsys, tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    out = tmp_path / "out"
    code = main(["prepare", "nsd", "--root", str(root), "--subject", "1", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"brainbench: error: missing file: {root / 'nsddata' / 'ppdata'}")
    assert "does not look like an NSD root" in err and "brainbench world generate" in err
    assert not out.exists()


def test_prepare_the_fixture(capsys, tmp_path):
    fx.make_fixture(tmp_path / "root")
    out = tmp_path / "prepared"
    code = main(["prepare", "nsd", "--root", str(tmp_path / "root"), "--subject", "1", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "prepared nsd subject 1:" in printed and "split shared6@3sess" in printed
    assert (out / "manifest.json").is_file()


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bench"],
        ["prepare", "nsd", "--root", "x", "--subject", "1"],
        ["world", "generate", "--subjects", "a"],
    ],
)
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert "usage: brainbench" in capsys.readouterr().err


def test_help_lists_the_commands():
    text = build_parser().format_help()
    for command in ("world", "prepare", "bench", "describe", "list"):
        assert command in text
    assert "brainbench describe litemind --scale nsd" in text


@pytest.mark.parametrize(
    ("dataset", "write", "extra"),
    [
        ("god", lambda m, root: m.write_god_fixture(root), []),
        ("mindeye", lambda m, root: m.write_me1_fixture(root), ["--version", "1"]),
        (
            "cc2017",
            lambda m, root: m.write_cc2017_fixture(root, n_train=3),
            ["--volumes-per-run", "6", "--p-value", "1"],
        ),
    ],
)
def test_prepare_every_adapter_from_the_command_line(capsys, tmp_path, dataset, write, extra):
    write(fixture_module(dataset), tmp_path / "root")
    out = tmp_path / "prepared"
    args = ["prepare", dataset, "--root", str(tmp_path / "root"), "--subject", "1", "--out", str(out), *extra]
    assert main(args) == 0, capsys.readouterr().err
    assert (out / "manifest.json").is_file()
    assert "subject 1" in capsys.readouterr().out
