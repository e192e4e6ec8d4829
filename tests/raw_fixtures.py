"""The fixture writers of ``tests/data/<dataset>/make_fixture.py``, loaded as modules."""

import importlib.util
from pathlib import Path
from types import ModuleType


def fixture_module(name: str) -> ModuleType:
    """``tests/data/<name>/make_fixture.py`` (nsd, god, cc2017, mindeye)."""
    spec = importlib.util.spec_from_file_location(
        f"{name}_make_fixture", Path(__file__).parent / f"data/{name}/make_fixture.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
