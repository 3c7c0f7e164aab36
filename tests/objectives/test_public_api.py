"""`ceu_rl.objectives` exports every public function of its modules (users import the pure objectives from there)."""

import importlib
import inspect
import pkgutil

import ceu_rl.objectives as objectives


def test_every_public_function_is_exported():
    missing = []
    for info in pkgutil.iter_modules(objectives.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"ceu_rl.objectives.{info.name}")
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ == module.__name__ and not name.startswith("_") and name not in objectives.__all__:
                missing.append(f"{info.name}.{name}")
    assert not missing, f"add to ceu_rl/objectives/__init__.py: {missing}"
    assert all(callable(getattr(objectives, name)) for name in objectives.__all__)
