"""Decoders, one module each, registered by method id in :data:`METHODS`.

A method is a registry entry (id -> ``module:Class``) plus configs, ``<config_dir>/<name>.yaml``. The
built-in methods keep their configs in ``brainbench/configs/<id>/``. A separate pip package adds a method
through the ``brainbench.methods`` entry-point group::

    [project.entry-points."brainbench.methods"]
    mymethod = "mypackage.decoder:MyDecoder"

and gives the class a ``config_dir`` attribute (a folder of ``<name>.yaml`` configs, e.g.
``Path(__file__).parent / "configs"``); without one the method runs only from a YAML path (``--config``).

Only registered classes are ever imported: a ``class_path`` read from a config or a saved ``decoder.json``
that names another class is refused (:func:`resolve_class`).
"""

from __future__ import annotations

import inspect
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from brainbench.errors import ConfigError
from brainbench.registry import Registry

CONFIG_ROOT = Path(str(resources.files("brainbench") / "configs"))

#: method id -> its LightningModule (imported on use)
METHODS: Registry[type] = Registry(
    "method",
    {
        "brainclip": "brainbench.methods.brainclip:BrainCLIP",
        "brainmclip": "brainbench.methods.brainmclip:BrainMCLIP",
        "litemind": "brainbench.methods.litemind:LiteMind",
        "mindeye": "brainbench.methods.mindeye:MindEye",
        "mindreader": "brainbench.methods.mindreader:MindReader",
        "mindtuner": "brainbench.methods.mindtuner:MindTuner",
        "neuroclips": "brainbench.methods.neuroclips:NeuroClips",
        "ridge": "brainbench.methods.ridge:RidgeDecoder",
        "willsaligner": "brainbench.methods.willsaligner:WillsAligner",
    },
    entry_point_group="brainbench.methods",
)

#: constructor arguments the data supplies when the model is built (never written in a config)
DATA_ARGS = ("n_voxels", "target_shapes", "rois")


def _dotted(target: str) -> str:
    """``package.module:Class`` or ``package.module.Class`` -> ``package.module.Class``."""
    return target.replace(":", ".")


def method_class_path(method: str) -> str:
    """The registered class of ``method`` as ``package.module.Class``, without importing it."""
    entry = METHODS[method]
    if isinstance(entry, str):
        return _dotted(entry)
    return f"{entry.__module__}.{entry.__qualname__}"


def method_of_class(class_path: str) -> str:
    """The method id whose registered class is ``class_path`` (``a.b.C`` or ``a.b:C``).

    Raises:
        ConfigError: the class is not a registered method class (it is not imported).
    """
    wanted = _dotted(class_path)
    for method in METHODS.list():
        if method_class_path(method) == wanted:
            return method
    raise ConfigError(
        f"class_path {class_path!r} is not a registered method class; registered: "
        f"{', '.join(method_class_path(m) for m in METHODS.list())} (a plug-in registers its class under the "
        "'brainbench.methods' entry-point group)"
    )


def resolve_class(class_path: str) -> type:
    """The registered method class ``class_path`` names; any other path is refused without importing it."""
    return METHODS.load(method_of_class(class_path))


def list_methods() -> list[str]:
    """Registered method ids (built-in and installed plug-ins), sorted."""
    return METHODS.list()


def config_dir(method: str) -> Path | None:
    """The folder of ``method``'s ``<name>.yaml`` configs (``None``: a plug-in without ``config_dir``)."""
    METHODS.check(method)
    if METHODS.is_built_in(method):
        return CONFIG_ROOT / method
    folder = getattr(METHODS.load(method), "config_dir", None)
    return None if folder is None else Path(folder)


def list_scales(method: str) -> list[str]:
    """Config names available for ``method``, e.g. ``["nsd", "world"]``."""
    folder = config_dir(method)
    return [] if folder is None else sorted(p.stem for p in folder.glob("*.yaml"))


def config_path(method: str, name: str) -> Path:
    """The file of config ``name`` of ``method``.

    Raises:
        ConfigError: unknown method, or no such config (listing the available ones).
    """
    folder = config_dir(method)
    path = None if folder is None else folder / f"{name}.yaml"
    if path is None or not path.is_file():
        raise ConfigError(
            f"{method} has no {name!r} config; available: {', '.join(list_scales(method)) or 'none'} "
            "(or pass a YAML path)"
        )
    return path


def read_yaml(path: Path) -> dict[str, Any]:
    """A config file as a mapping; bad YAML, an empty file or a non-mapping raise :class:`ConfigError`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config file ({error.strerror})") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not a UTF-8 text file ({error.reason} at byte {error.start})") from error
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{line}: {problem}") from error
    if config is None:
        raise ConfigError(f"{path}: the config file is empty; it needs at least a model section")
    if not isinstance(config, dict):
        raise ConfigError(
            f"{path}: a config is a mapping of sections (model, data, trainer, ...), not a list"
        )
    return config


def load_method_config(method: str, scale: str) -> dict[str, Any]:
    """The parsed ``<config_dir>/<scale>.yaml`` as written, with its ``path`` added.

    This is the file's content only; :func:`brainbench.config.load_run_config` validates it against the
    classes' signatures and fills the data-independent defaults.
    """
    path = config_path(method, scale)
    config = read_yaml(path)
    if not isinstance(config.get("model"), dict) or "class_path" not in config["model"]:
        raise ConfigError(f"{path}: needs model.class_path and model.init_args")
    config["path"] = str(path)
    return config


def takes_argument(cls: type, name: str) -> bool:
    """Whether ``cls``'s constructor has a parameter called ``name``."""
    return name in inspect.signature(cls.__init__).parameters


def schedule_epochs(config: dict[str, Any], cls: type) -> dict[str, int]:
    """``{"max_epochs": trainer.max_epochs}`` for a class whose schedule takes it, else ``{}``.

    ``max_epochs`` is written once, under ``trainer``; a ``model.init_args.max_epochs`` that disagrees with it
    is refused.

    Raises:
        ConfigError: the trainer gives no ``max_epochs``, or the model section gives another one.
    """
    if not takes_argument(cls, "max_epochs"):
        return {}
    where = config.get("path", "the config")
    epochs = (config.get("trainer") or {}).get("max_epochs")
    given = (config["model"].get("init_args") or {}).get("max_epochs")
    if epochs is None:
        raise ConfigError(
            f"{where}: {cls.__name__}'s schedule needs trainer.max_epochs; add it under trainer"
        )
    if given is not None and given != epochs:
        raise ConfigError(
            f"{where}: model.init_args.max_epochs ({given}) differs from trainer.max_epochs ({epochs}); "
            "write max_epochs once, under trainer"
        )
    return {"max_epochs": int(epochs)}


def build_method(
    config: dict[str, Any],
    n_voxels: int,
    target_shapes: dict[str, tuple[int, ...]],
    rois: dict[str, list[int]] | None = None,
) -> Any:  # noqa: ANN401
    """Instantiates the config's model with the data-dependent sizes and the trainer's epochs filled in.

    ``rois`` (the manifest's ROI name -> voxel indices) is passed only to methods whose constructor takes a
    ``rois`` argument (ROI-split inputs, e.g. BrainMCLIP); ``max_epochs`` (``trainer.max_epochs``) only to
    methods whose constructor takes it (their learning-rate schedules).
    """
    init_args = dict(config["model"].get("init_args") or {})
    for key, value in init_args.items():
        if isinstance(value, list):
            init_args[key] = tuple(value)
    cls = resolve_class(config["model"]["class_path"])
    init_args |= schedule_epochs(config, cls)
    if takes_argument(cls, "rois"):
        if rois is None:
            raise ConfigError(f"{cls.__name__} splits its input by ROI but no ROIs were given")
        init_args["rois"] = {name: list(map(int, idx)) for name, idx in rois.items()}
    return cls(n_voxels=n_voxels, target_shapes=target_shapes, **init_args)
