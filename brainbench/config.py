"""The ``bench`` configuration: request options and a method config, typed and checked before anything runs.

A run is a :class:`~brainbench.bench.BenchRequest` (``--method``, ``--subject``, ...: options generated from
the dataclass's fields and ``Attributes:`` docstring) plus a method config, ``configs/<method>/<name>.yaml``
or a YAML path, in LightningCLI's shape::

    dataset: world-god                    # optional: the dataset the config is made for
    model: {class_path: ..., init_args: {...}}   # a registered method class and its constructor arguments
    data: {backbone: ..., targets: [...], batch_size: ...}   # FMRIDataModule arguments
    trainer: {max_epochs: 30}             # lightning.Trainer arguments (logger/callbacks as class_path)
    generator: {kind: ..., inputs: {...}, options: {...}}
    pretrain: {subjects: [2, 5, 7]}

Every section is checked against its class's signature with jsonargparse when the command is parsed: an
unknown key, a wrong type, bad YAML or an empty file is one :class:`~brainbench.errors.ConfigError` naming the
key, the file and the valid keys. Any value can be overridden on the command line
(``--model.init_args.lr=3e-4``, ``--trainer.max_epochs=5``, ``--data.batch_size=64``); ``--print-config``
prints the merged config. ``max_epochs`` is written once, under ``trainer``; methods whose schedule takes it
receive it in ``model.init_args`` when the config is loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
import typing
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import yaml
from jsonargparse import ActionYesNo, ArgumentParser, Namespace

from brainbench.data.datamodule import FMRIDataModule
from brainbench.data.manifest import Manifest
from brainbench.data.registry import DATASETS
from brainbench.errors import ConfigError
from brainbench.generators import GENERATORS
from brainbench.methods import (
    DATA_ARGS,
    METHODS,
    config_path,
    list_scales,
    method_class_path,
    read_yaml,
    schedule_epochs,
)
from brainbench.request import BenchRequest

#: the top-level keys of a method config, in the order the error messages list them
SECTIONS = ("dataset", "model", "data", "trainer", "generator", "pretrain")
#: Trainer arguments the request sets (the command-line option to use instead)
TRAINER_OWNED = {
    **{name: f"--{name.replace('_', '-')}" for name in ("accelerator", "strategy", "devices", "num_nodes")},
    **{"precision": "--precision", "default_root_dir": "--runs", "enable_progress_bar": "--quiet"},
    **{
        "enable_model_summary": "--quiet",
        "use_distributed_sampler": "(the datamodule splits by rank itself)",
    },
}
#: FMRIDataModule arguments the run sets
DATA_OWNED = {
    "data_dir": "--data-root (the prepared folder)",
    "num_workers": "--num-workers",
    "seed": "--seed",
}
#: BenchRequest fields that are config keys on the command line (``--generator KIND`` = ``--generator.kind``)
REQUEST_SECTION_FIELDS = ("generator",)
_SECTION_PREFIXES = tuple(f"--{s}." for s in SECTIONS if s != "dataset")


def docstring_help(obj: object) -> dict[str, str]:
    """Argument name -> its description, from a Google-style ``Args:``/``Attributes:`` docstring."""
    helps: dict[str, str] = {}
    for doc in (inspect.getdoc(obj), inspect.getdoc(getattr(obj, "__init__", None))):
        section, name = False, ""
        for line in (doc or "").splitlines():
            if re.match(r"^(Args|Arguments|Attributes|Parameters):\s*$", line):
                section, name = True, ""
                continue
            if section and line and not line.startswith(" "):
                section = False
            entry = re.match(r"^ {4}(\w+)(?: \([^)]*\))?: ?(.*)$", line) if section else None
            if entry:
                name = entry.group(1)
                helps.setdefault(name, entry.group(2).strip())
            elif section and name and line.startswith(" " * 5) and helps.get(name) is not None:
                helps[name] = f"{helps[name]} {line.strip()}".strip()
    return {k: re.sub(r":\w+:`~?([^`]+)`", r"\1", v).replace("``", "") for k, v in helps.items()}


def _fill_help(parser: ArgumentParser, prefix: str, obj: object) -> None:
    """Gives the options under ``prefix`` the help of ``obj``'s docstring where jsonargparse found none."""
    helps = docstring_help(obj)
    for action in parser._actions:
        name = action.dest[len(prefix) :] if action.dest.startswith(prefix) else ""
        if name in helps and not action.help:
            action.help = helps[name]


def _default_of(field: dataclasses.Field) -> tuple[bool, Any]:
    if field.default is not dataclasses.MISSING:
        return False, field.default
    if field.default_factory is not dataclasses.MISSING:
        return False, field.default_factory()
    return True, None


def add_request_options(parser: ArgumentParser) -> None:
    """One option per :class:`BenchRequest` field (``--data-root`` and ``--data_root``), typed and helped."""
    hints = typing.get_type_hints(BenchRequest)
    helps = docstring_help(BenchRequest)
    for field in dataclasses.fields(BenchRequest):
        if field.name in REQUEST_SECTION_FIELDS:
            continue
        names = [f"--{field.name.replace('_', '-')}"] + ([f"--{field.name}"] if "_" in field.name else [])
        required, default = _default_of(field)
        text = helps.get(field.name, "")
        if hints[field.name] is bool:
            parser.add_argument(*names, action=ActionYesNo, default=default, help=text)
        else:
            parser.add_argument(*names, type=hints[field.name], default=default, required=required, help=text)
    if "progress" in hints:
        parser.add_argument("--quiet", dest="progress", action="store_false", help="no progress bars")
    parser.add_argument("--print-config", action="store_true", help="print the merged config (YAML) and exit")


def add_config_sections(parser: ArgumentParser, model_class: type | None, with_dataset: bool = True) -> None:
    """The config sections, checked against ``model_class``, FMRIDataModule and Lightning's Trainer."""
    from lightning import Trainer

    if with_dataset:
        parser.add_argument("--dataset", type=str | None, default=None, help="the dataset the config is for")
    parser.add_argument("--model.class_path", type=str | None, default=None, help="the method's class")
    if model_class is not None:
        skip = {*DATA_ARGS, "max_epochs"}
        parser.add_class_arguments(model_class, "model.init_args", skip=skip, fail_untyped=False)
        _fill_help(parser, "model.init_args.", model_class)
    parser.add_class_arguments(FMRIDataModule, "data", skip=set(DATA_OWNED))
    _fill_help(parser, "data.", FMRIDataModule)
    parser.add_class_arguments(Trainer, "trainer", skip=set(TRAINER_OWNED))
    _fill_help(parser, "trainer.", Trainer)
    parser.add_argument(
        "--generator.kind",
        type=str | None,
        default=None,
        help=f"generator (also --generator KIND): {', '.join(GENERATORS)}",
    )
    parser.add_argument(
        "--generator.inputs", type=dict[str, str] | None, default=None, help="input -> prediction"
    )
    parser.add_argument(
        "--generator.options", type=dict[str, Any] | None, default=None, help="from_config options"
    )
    parser.add_argument(
        "--pretrain.subjects",
        type=list[int] | Literal["others"] | None,
        default=None,
        help="subjects to pre-train on ('others': every world subject but the fitted one)",
    )
    for action in parser._actions:  # required keys are checked on the merged config (overrides come apart)
        action.required = False
        if action.help == "Path to a configuration file.":  # a section from its own file: not offered
            action.help = argparse.SUPPRESS


def config_parser(model_class: type | None) -> ArgumentParser:
    """A parser of the config sections alone (a YAML file's keys, or ``--section.key`` overrides)."""
    parser = ArgumentParser(prog="brainbench bench", exit_on_error=False)
    add_config_sections(parser, model_class)
    return parser


def bench_parser(model_class: type | None = None) -> ArgumentParser:
    """The full ``brainbench bench`` parser (request options and config sections), for ``--help``."""
    parser = ArgumentParser(
        prog="brainbench bench",
        description="Train and evaluate one method on one subject, and append a leaderboard row. Config "
        "values come from --config and any --section.key=value given here.",
        exit_on_error=False,
    )
    add_request_options(parser)
    add_config_sections(parser, model_class, with_dataset=False)
    return parser


def _simplify(text: str) -> str:
    text = re.sub(r"<class '(?:[\w]+\.)*(\w+)'>", r"\1", text).replace("NoneType", "None")
    return re.sub(r"typing\.|collections\.abc\.", "", text)


def _one_line(error: Exception, source: str) -> ConfigError:
    """A jsonargparse error as one line naming ``source`` and the key."""
    text = str(error)
    key = re.search(r'(?:Parser key|Key) "([^"]+)"', text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = next((line for line in lines if "is not accepted" in line), "")
    detail = detail or next((line.rstrip(":") for line in lines if "Problem with" in line), "")
    subtypes = next((line for line in lines if line.startswith("Subtypes:")), "")
    given = next((line for line in lines if line.startswith("Given value:")), "")
    if key and subtypes:
        message = f"wrong type for '{key.group(1)}': expected one of {subtypes[10:]}, got {given[13:][:80]!r}"
        message += f" ({detail})" if detail else ""
    elif key:
        message = f"wrong value for '{key.group(1)}': {' '.join(lines[1:2]) or lines[0]}"
    else:
        message = lines[0] if lines else text
    return ConfigError(f"{source}: {_simplify(message)}")


def config_keys(parser: ArgumentParser) -> set[str]:
    """The parser's leaf keys (``trainer.max_epochs``; not the ``data`` group's own config-loading option)."""
    dests = {a.dest for a in parser._actions if a.dest != "help" and not a.dest.endswith(".help")}
    return {d for d in dests if not any(other.startswith(f"{d}.") for other in dests)}


def _children(keys: set[str], prefix: str) -> list[str]:
    """The next key components under ``prefix`` (``"model."`` -> ``class_path, init_args``)."""
    found: list[str] = []
    for key in keys:
        if key.startswith(prefix):
            part = key[len(prefix) :].split(".")[0]
            if part not in found:
                found.append(part)
    order = {name: i for i, name in enumerate(SECTIONS)}
    return sorted(found, key=lambda k: (order.get(k, len(order)), k)) if not prefix else sorted(found)


def _unknown_key(key: str, keys: set[str], source: str) -> ConfigError:
    parts = key.split(".")
    parent = ".".join(parts[:-1])
    if parent == "model.init_args" and parts[-1] == "max_epochs":
        return ConfigError(f"{source}: max_epochs is written once, under trainer: use trainer.max_epochs")
    if parent == "trainer" and parts[-1] in TRAINER_OWNED:
        return ConfigError(f"{source}: trainer.{parts[-1]} is set by the run: use {TRAINER_OWNED[parts[-1]]}")
    if parent == "data" and parts[-1] in DATA_OWNED:
        return ConfigError(f"{source}: data.{parts[-1]} is set by the run: use {DATA_OWNED[parts[-1]]}")
    valid = _children(keys, f"{parent}." if parent else "")
    return ConfigError(f"{source}: unknown key '{key}'; valid: {', '.join(valid)}")


def check_keys(tree: dict[str, Any], keys: set[str], source: str, prefix: str = "") -> None:
    """Raises :class:`ConfigError` at the first key of ``tree`` that no option of the parser takes."""
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if key in keys:
            continue  # a leaf: jsonargparse type-checks its value (class_path/init_args dicts too)
        if not any(k.startswith(f"{key}.") for k in keys):
            raise _unknown_key(key, keys, source)
        if value is not None and not isinstance(value, dict):
            raise ConfigError(
                f"{source}: '{key}' is a section (keys: {', '.join(_children(keys, key + '.'))})"
            )
        check_keys(value or {}, keys, source, f"{key}.")


def _plain(value: Any) -> Any:  # noqa: ANN401
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        old = merged.get(key)
        merged[key] = _merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return merged


def with_prepared_identity(request: BenchRequest) -> BenchRequest:
    """With ``--prepared``, the dataset and subject are those its manifest records.

    Raises:
        ConfigError: ``--dataset`` or ``--subject`` given and different from the manifest's.
    """
    if request.prepared is None:
        return request
    manifest = Manifest.load(request.prepared)
    if request.dataset not in (None, manifest.dataset):
        raise ConfigError(
            f"--dataset {request.dataset} but {request.prepared} holds dataset {manifest.dataset!r}; "
            "leave --dataset out with --prepared"
        )
    return replace(request, dataset=manifest.dataset, subject=manifest.subject)


def config_file(request: BenchRequest) -> Path:
    """The method config a request names: ``--config NAME`` of the method, or a YAML path.

    The default name is ``world`` for the world datasets, else the dataset's name.
    """
    dataset = request.dataset or "world-nsd"
    if request.prepared is None:  # a prepared folder names its own dataset
        DATASETS.check(dataset)
    name = request.config or ("world" if dataset.startswith("world") else dataset)
    if name.endswith((".yaml", ".yml")) or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    if request.config is None and name not in list_scales(request.method):
        raise ConfigError(
            f"{request.method} has no config for dataset {dataset!r} (its configs: "
            f"{', '.join(list_scales(request.method)) or 'none'}); pass --config NAME to use one of them on "
            f"{dataset}, or --config PATH.yaml"
        )
    return config_path(request.method, name)


def _model_class(raw: dict[str, Any], source: str, method: str) -> type:
    """The model section's class, which must be the registered class of ``method`` (checked before import)."""
    model = raw.get("model")
    if not isinstance(model, dict) or not model.get("class_path"):
        raise ConfigError(f"{source}: needs model.class_path and model.init_args")
    wanted = method_class_path(method)
    if str(model["class_path"]).replace(":", ".") != wanted:
        raise ConfigError(
            f"{source}: model.class_path {model['class_path']!r} is not the class of method {method!r} "
            f"({wanted}); pass the method whose class it is, or fix class_path"
        )
    return METHODS.load(method)


def _check_required(config: dict[str, Any], cls: type, request: BenchRequest, source: str) -> None:
    """Constructor arguments without a default must be given; the trainer needs an end."""
    init_args = config["model"].get("init_args") or {}
    params = inspect.signature(cls.__init__).parameters.values()
    missing = [
        p.name
        for p in params
        if p.default is p.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and p.name not in (*DATA_ARGS, "self", "max_epochs")
        and p.name not in init_args
    ]
    if missing:
        raise ConfigError(
            f"{source}: model.init_args needs {', '.join(missing)} ({cls.__name__} has no default)"
        )
    if not (config.get("data") or {}).get("backbone") and not request.backbone:
        raise ConfigError(
            f"{source}: data.backbone is missing; add it (e.g. world-clip:v1) or pass --backbone"
        )
    trainer = config.get("trainer") or {}
    if trainer.get("max_epochs") is None and trainer.get("max_steps") in (None, -1):
        raise ConfigError(
            f"{source}: trainer.max_epochs is missing (Lightning would train 1000 epochs); add trainer: "
            "{max_epochs: N}"
        )
    generator = config.get("generator")
    if generator and generator.get("kind") not in GENERATORS:
        raise ConfigError(
            f"{source}: unknown generator kind {generator.get('kind')!r}; available: {', '.join(GENERATORS)}"
        )
    if config.get("dataset") is not None and config["dataset"] not in DATASETS:
        raise ConfigError(
            f"{source}: unknown dataset {config['dataset']!r}; available: {', '.join(DATASETS)}"
        )


def load_run_config(
    request: BenchRequest, overrides: Sequence[str] = ()
) -> tuple[BenchRequest, dict[str, Any]]:
    """The request with its dataset filled in, and its method config checked, merged and completed.

    Args:
        request: the run; ``request.generator`` overrides the generator section's ``kind``.
        overrides: ``--section.key=value`` command-line tokens (``["--trainer.max_epochs=5"]``).

    Returns:
        ``(request, config)``: ``config`` is a plain dict ``{"dataset", "model": {"class_path", "init_args"},
        "data", "trainer", "generator" (or None), "pretrain" (or None), "path"}``, as written in the YAML and
        the overrides (``trainer.logger``/``callbacks`` stay ``class_path``/``init_args`` dicts), with
        ``model.init_args.max_epochs`` set from ``trainer.max_epochs`` for methods whose schedule takes it.

    Raises:
        ConfigError: one line naming the file (or the command line), the key and the valid keys.
    """
    METHODS.check(request.method)
    request = with_prepared_identity(request)
    path = config_file(request)
    source = str(path)
    raw = read_yaml(path)
    unknown = [key for key in raw if key not in SECTIONS]
    if unknown:
        raise ConfigError(f"{source}: unknown key '{unknown[0]}'; valid: {', '.join(SECTIONS)}")
    cls = _model_class(raw, source, request.method)
    parser = config_parser(cls)
    keys = config_keys(parser)
    check_keys(raw, keys, source)
    try:  # typed values: YAML reads `1e-3` as a string, the float argument gets 0.001
        typed = _plain(parser.parse_object(raw, defaults=False))
    except argparse.ArgumentError as error:
        raise _one_line(error, source) from None
    tokens = list(overrides)
    if request.generator is not None:
        tokens.append(f"--generator.kind={request.generator}")
    cli = _parse_overrides(parser, keys, tokens)
    if cli.get("generator") and not raw.get("generator"):
        raise ConfigError(
            f"--generator {cli['generator'].get('kind')}: the {request.method} config has no generator "
            "section (the method predicts no embedding a generator is set up for)"
        )
    merged = _merge(typed, cli)
    source = f"{path} (with the command-line overrides)" if tokens else source
    _check_required(merged, cls, request, source)
    dataset = request.dataset or str(merged.get("dataset") or "world-nsd")
    config = {
        "dataset": dataset,
        "model": {
            "class_path": merged["model"]["class_path"],
            "init_args": dict(merged["model"].get("init_args") or {}),
        },
        "data": dict(merged.get("data") or {}),
        "trainer": dict(merged.get("trainer") or {}),
        "generator": merged.get("generator"),
        "pretrain": merged.get("pretrain"),
        "path": str(path),
    }
    config["model"]["init_args"] |= schedule_epochs(config, cls)
    return replace(request, dataset=dataset), config


def _parse_overrides(parser: ArgumentParser, keys: set[str], tokens: list[str]) -> dict[str, Any]:
    """``--section.key=value`` tokens as a nested dict of typed values (only the keys given)."""
    for token in tokens:
        key = token[2:].split("=", 1)[0]
        if key not in keys and not any(key.startswith(f"{k}.") for k in keys):
            raise _unknown_key(key, keys, "command line")
    if not tokens:
        return {}
    try:
        return _plain(parser.parse_args(tokens, defaults=False))
    except argparse.ArgumentError as error:
        raise _one_line(error, "command line") from None


#: short flags for config keys: ``--generator KIND`` is ``--generator.kind=KIND``, ``--train-sessions N`` (the
#: few-shot protocol of MindTuner and Wills Aligner: the fitted subject's first N sessions) is
#: ``--data.train_sessions=N``
SHORT_FLAGS = {"--generator": "--generator.kind", "--train-sessions": "--data.train_sessions"}


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(request tokens, config override tokens)``, with the :data:`SHORT_FLAGS` expanded."""
    request, sections = [], []
    tokens = list(argv)
    while tokens:
        token = tokens.pop(0)
        for short, key in SHORT_FLAGS.items():
            if token == short or token.startswith(f"{short}="):
                token = key + token[len(short) :]
        if token.startswith(_SECTION_PREFIXES):
            if "=" not in token and tokens and not tokens[0].startswith("--"):
                token = f"{token}={tokens.pop(0)}"
            sections.append(token)
        else:
            request.append(token)
    return request, sections


def config_yaml(request: BenchRequest, config: dict[str, Any]) -> str:
    """The merged config as a YAML method config (reusable with ``--config``), the request as a comment."""
    cls = METHODS.load(request.method)
    epochs = schedule_epochs(config, cls)
    body: dict[str, Any] = {k: config[k] for k in SECTIONS if config.get(k) is not None}
    init_args = {k: v for k, v in config["model"]["init_args"].items() if k not in epochs}
    body["model"] = {"class_path": config["model"]["class_path"], "init_args": init_args}
    changed = {
        f.name.replace("_", "-"): getattr(request, f.name)
        for f in dataclasses.fields(request)
        if f.name == "method" or getattr(request, f.name) != _default_of(f)[1]
    }
    header = "# brainbench bench " + " ".join(f"--{k}={v}" for k, v in changed.items())
    return f"{header}\n# config: {config['path']}\n" + yaml.safe_dump(_plain(body), sort_keys=False)


def parse_bench_args(argv: Sequence[str]) -> tuple[BenchRequest, dict[str, Any]]:
    """``brainbench bench`` arguments -> ``(request, config)``; ``--help`` and ``--print-config`` exit.

    Raises:
        ConfigError: a wrong option or config value (one line); a missing ``--method`` is a usage error.
    """
    request_tokens, section_tokens = split_argv(argv)
    if {"-h", "--help"} & set(request_tokens):
        bench_parser(_help_class(request_tokens)).print_help()
        raise SystemExit(0)
    parser = ArgumentParser(prog="brainbench bench", exit_on_error=False)
    add_request_options(parser)
    try:
        namespace = parser.parse_args(request_tokens)
    except argparse.ArgumentError as error:
        if "method" in str(error) and "--method" not in request_tokens:
            parser.print_usage(sys.stderr)
            print("brainbench bench: error: --method is required (see `brainbench list`)", file=sys.stderr)
            raise SystemExit(2) from None
        raise _option_error(error, parser) from None
    values = _plain(namespace)
    print_config = values.pop("print_config")
    request, config = load_run_config(BenchRequest(**values), section_tokens)
    if config.get("generator") and any(t.startswith("--generator.kind") for t in section_tokens):
        request = replace(request, generator=config["generator"]["kind"])
    if print_config:
        print(config_yaml(request, config), end="")
        raise SystemExit(0)
    return request, config


def _option_error(error: argparse.ArgumentError, parser: ArgumentParser) -> ConfigError:
    text = str(error)
    unknown = re.search(r"unrecognized arguments: (\S+)", text)
    if unknown:
        options = sorted({o for a in parser._actions for o in a.option_strings if "_" not in o and o != "-h"})
        return ConfigError(f"command line: unknown option {unknown.group(1)!r}; valid: {', '.join(options)}")
    return _one_line(error, "command line")


def _help_class(tokens: list[str]) -> type | None:
    """The model class of ``--method`` for ``--help``, if one is given and registered."""
    for i, token in enumerate(tokens):
        method = token.split("=", 1)[1] if token.startswith("--method=") else None
        if token == "--method" and i + 1 < len(tokens):
            method = tokens[i + 1]
        if method in METHODS:
            return METHODS.load(method)
    return None
