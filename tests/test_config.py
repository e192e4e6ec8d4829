"""The bench config: parse-time checks with one-line errors, overrides, max_epochs written once, the CLI."""

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

from brainbench.bench import BenchRequest
from brainbench.cli import main
from brainbench.config import (
    SECTIONS,
    bench_parser,
    check_keys,
    config_keys,
    config_parser,
    docstring_help,
    load_run_config,
    parse_bench_args,
    split_argv,
)
from brainbench.errors import ConfigError
from brainbench.methods import CONFIG_ROOT, list_methods, list_scales, load_method_config
from brainbench.methods.litemind import LiteMind

CONFIGS = [(method, scale) for method in list_methods() for scale in list_scales(method)]
LITEMIND = yaml.safe_load((CONFIG_ROOT / "litemind" / "world.yaml").read_text())


def _write(tmp_path, change=None, text=None):
    """litemind's world config with ``change`` applied (or ``text``), written to a file; returns its path."""
    config = copy.deepcopy(LITEMIND)
    if change:
        change(config)
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(config) if text is None else text)
    return str(path)


def _load_error(tmp_path, change=None, text=None) -> str:
    path = _write(tmp_path, change, text)
    with pytest.raises(ConfigError) as caught:
        load_run_config(BenchRequest(method="litemind", config=path))
    message = str(caught.value)
    assert "\n" not in message and message.startswith(path)
    return message


@pytest.mark.parametrize(("method", "scale"), CONFIGS, ids=[f"{m}-{s}" for m, s in CONFIGS])
def test_every_shipped_config_loads_unchanged(method, scale):
    """The returned sections are the file's, so the models are built with the same arguments as before."""
    request, config = load_run_config(BenchRequest(method=method, config=scale))
    raw = load_method_config(method, scale)
    assert config["path"] == raw["path"]
    assert {k: config[k] for k in ("data", "trainer")} == {k: raw[k] for k in ("data", "trainer")}
    assert config["generator"] == raw.get("generator") and config["pretrain"] == raw.get("pretrain")
    init_args = dict(config["model"]["init_args"])
    if "max_epochs" in init_args:  # the schedule's length comes from the trainer's, the single source
        assert init_args.pop("max_epochs") == raw["trainer"]["max_epochs"]
    assert init_args == raw["model"]["init_args"]
    assert request.dataset == config["dataset"] == raw.get("dataset", "world-nsd")


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parent / "configs").glob("*.yaml")), ids=lambda p: p.stem
)
def test_the_test_configs_load(path):
    method = path.stem.split("_")[0]
    _, config = load_run_config(BenchRequest(method=method, config=str(path)))
    assert config["trainer"]["max_epochs"] == yaml.safe_load(path.read_text())["trainer"]["max_epochs"]


def test_max_epochs_is_written_once_and_follows_the_trainer(tmp_path):
    _, config = load_run_config(BenchRequest(method="litemind"), ["--trainer.max_epochs=7"])
    assert config["trainer"]["max_epochs"] == 7 and config["model"]["init_args"]["max_epochs"] == 7
    message = _load_error(tmp_path, lambda c: c["model"]["init_args"].update(max_epochs=30))
    assert "max_epochs is written once, under trainer" in message
    with pytest.raises(ConfigError, match="written once, under trainer"):
        load_run_config(BenchRequest(method="litemind"), ["--model.init_args.max_epochs=3"])


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c.update(trainr=c.pop("trainer")), f"unknown key 'trainr'; valid: {', '.join(SECTIONS)}"),
        (lambda c: c.update(modle=c.pop("model")), "unknown key 'modle'; valid: dataset, model, data"),
        (lambda c: c["model"]["init_args"].update(alpha=1.0), "unknown key 'model.init_args.alpha'; valid: "),
        (
            lambda c: c["data"].update(batchsize=64),
            "unknown key 'data.batchsize'; valid: backbone, batch_size",
        ),
        (lambda c: c["data"].update(batch_size="big"), "wrong value for 'data.batch_size'"),
        (lambda c: c["trainer"].update(max_epochs="x"), "wrong type for 'trainer.max_epochs'"),
        (lambda c: c["trainer"].update(devices=4), "trainer.devices is set by the run: use --devices"),
        (lambda c: c.pop("trainer"), "trainer.max_epochs is missing"),
        (lambda c: c["model"].update(class_path="os.system"), "'os.system' is not the class of method"),
        (lambda c: c.update(generator={"kind": "nope", "inputs": {}}), "unknown generator kind 'nope'"),
        (lambda c: c.update(dataset="nope"), "unknown dataset 'nope'"),
    ],
)
def test_a_wrong_key_or_value_is_one_line_naming_the_file_and_the_key(tmp_path, change, expected):
    assert expected in _load_error(tmp_path, change)


def test_the_valid_init_args_are_the_constructors_minus_what_the_run_supplies(tmp_path):
    message = _load_error(tmp_path, lambda c: c["model"]["init_args"].update(alpha=1.0))
    valid = set(message.split("valid: ")[1].split(", "))
    assert {"lr", "stage_widths", "warmup_epochs"} <= valid
    assert not valid & {"n_voxels", "target_shapes", "rois", "max_epochs"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("model:\n  class_path: [a\n", "not valid YAML at line 3"),
        ("", "the config file is empty"),
        ("- model\n", "a config is a mapping of sections"),
    ],
)
def test_bad_yaml_and_an_empty_file_are_one_line_errors(tmp_path, text, expected):
    assert expected in _load_error(tmp_path, text=text)


def test_values_are_typed_by_the_signature(tmp_path):
    path = _write(
        tmp_path, text=(CONFIG_ROOT / "litemind" / "world.yaml").read_text().replace("3.0e-3", "3e-3")
    )
    assert (
        yaml.safe_load(Path(path).read_text())["model"]["init_args"]["lr"] == "3e-3"
    )  # YAML 1.1 reads a str
    _, config = load_run_config(BenchRequest(method="litemind", config=path))
    assert config["model"]["init_args"]["lr"] == 3e-3


def test_a_logger_is_checked_against_its_class_and_returned_as_class_path(tmp_path):
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "logs"}}
    path = _write(tmp_path, lambda c: c["trainer"].update(logger=logger))
    _, config = load_run_config(BenchRequest(method="litemind", config=path))
    assert config["trainer"]["logger"] == logger
    wrong = {**logger, "init_args": {"save_dirr": "logs"}}
    assert "Option 'save_dirr' is not accepted" in _load_error(
        tmp_path, lambda c: c["trainer"].update(logger=wrong)
    )


def test_command_line_overrides_are_typed_and_merged():
    argv = ["--method", "litemind", "--model.init_args.lr=3e-4", "--trainer.max_epochs", "5"]
    request, config = parse_bench_args([*argv, "--data.batch_size=64", "--data.targets=[clip_tokens]"])
    assert config["model"]["init_args"]["lr"] == 3e-4 and config["data"]["batch_size"] == 64
    assert config["trainer"] == {"max_epochs": 5} and config["model"]["init_args"]["max_epochs"] == 5
    assert config["model"]["init_args"]["stage_widths"] == LITEMIND["model"]["init_args"]["stage_widths"]
    assert request.method == "litemind" and request.dataset == "world-nsd"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("--model.init_args.lrr=1e-3", "command line: unknown key 'model.init_args.lrr'; valid: depths"),
        ("--model.init_args.lr=abc", "command line: wrong value for 'model.init_args.lr'"),
        ("--trainer.accelerator=gpu", "trainer.accelerator is set by the run: use --accelerator"),
        ("--data.num_workers=4", "data.num_workers is set by the run: use --num-workers"),
        ("--subjct=2", "command line: unknown option '--subjct=2'; valid: --accelerator"),
    ],
)
def test_a_wrong_override_is_one_line_from_the_cli(capsys, tmp_path, override, expected):
    assert main(["bench", "--method", "litemind", "--home", str(tmp_path / "home"), override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("brainbench: error: command line: ") and err.count("\n") == 1
    assert expected in err
    assert not (tmp_path / "home").exists()


def test_print_config_prints_the_merged_config_and_exits(capsys, tmp_path):
    with pytest.raises(SystemExit) as caught:
        main(
            ["bench", "--method", "litemind", "--model.init_args.lr=1e-3", "--subject", "2", "--print-config"]
        )
    assert caught.value.code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("# brainbench bench --method=litemind --subject=2")
    config = yaml.safe_load(printed)
    assert config["model"]["init_args"]["lr"] == 1e-3 and "max_epochs" not in config["model"]["init_args"]
    assert config["trainer"]["max_epochs"] == LITEMIND["trainer"]["max_epochs"]
    (tmp_path / "printed.yaml").write_text(printed)  # the printed config is itself a valid config
    _, again = load_run_config(BenchRequest(method="litemind", config=str(tmp_path / "printed.yaml")))
    assert again["model"]["init_args"]["lr"] == 1e-3


def test_todays_flag_spellings_still_parse():
    argv = "--method ridge --subject 2 --data-root /d --world-preset tiny --num-nodes 2 --val-fraction 0.2"
    argv += " --num-workers 3 --quiet --compile --devices 2 --generator retrieval --dataset world-god"
    request, config = parse_bench_args([*argv.split(), "--config", str(_ridge_with_generator())])
    assert (request.subject, str(request.data_root), request.world_preset, request.num_nodes) == (
        2,
        "/d",
        "tiny",
        2,
    )
    assert (request.val_fraction, request.num_workers, request.progress, request.compile) == (
        0.2,
        3,
        False,
        True,
    )
    assert request.devices == 2 and request.dataset == "world-god" and request.generator == "retrieval"
    assert config["generator"]["kind"] == "retrieval"
    assert parse_bench_args(["--method", "ridge", "--devices", "auto"])[0].devices == "auto"


def _ridge_with_generator():
    import tempfile

    config = load_method_config("ridge", "world")
    config.pop("path")
    config["generator"] = {"kind": "world-decoder", "inputs": {"clip_image": "clip_image"}}
    path = Path(tempfile.mkdtemp()) / "ridge_gen.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_request_options_follow_the_dataclass_fields_and_docstring():
    """A field added to BenchRequest becomes an option with its type, default and help, without edits here."""
    parser = bench_parser(LiteMind)
    options = {o: a for a in parser._actions for o in a.option_strings}
    helps = docstring_help(BenchRequest)
    for field in dataclasses.fields(BenchRequest):
        if field.name == "generator":
            assert "--generator.kind" in options
            continue
        action = options[f"--{field.name.replace('_', '-')}"]
        assert action.help == helps[field.name], field.name
    assert all(a.help for a in parser._actions if a.dest != "help"), "every option has help"


def test_check_keys_descends_sections_and_stops_at_typed_leaves():
    keys = config_keys(config_parser(LiteMind))
    check_keys({"trainer": {"logger": {"class_path": "x", "init_args": {"anything": 1}}}}, keys, "f")
    with pytest.raises(ConfigError, match="f: unknown key 'trainer.loggr'"):
        check_keys({"trainer": {"loggr": False}}, keys, "f")


def test_bench_without_method_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["bench", "--subject", "1"])
    assert caught.value.code == 2
    assert "usage: brainbench bench" in capsys.readouterr().err


def test_bench_help_lists_the_model_options_of_the_method(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--method", "litemind", "--help"])
    text = capsys.readouterr().out
    assert "--model.init_args.warmup_epochs" in text and "--trainer.max_epochs" in text
    assert "--data-root" in text and "--quiet" in text


def test_short_flags_are_config_keys():
    request, sections = split_argv(
        ["--method", "mindtuner", "--train-sessions", "1", "--generator=retrieval"]
    )
    assert request == ["--method", "mindtuner"]
    assert sections == ["--data.train_sessions=1", "--generator.kind=retrieval"]
