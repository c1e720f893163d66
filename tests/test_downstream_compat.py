"""Libraries' private names live behind ettin.downstream.compat (issue 30): with the tested versions every one is
there; when one goes (a new release), the check and the accessors fail with one line naming the library, the
version found, the versions tested and what to do, and the commands stop before any model work."""

import importlib
import sys
import types

import pytest

from ettin.downstream import compat


def test_every_library_has_tested_versions_and_each_private_name_its_use():
    assert set(compat.PRIVATE) == set(compat.TESTED)
    for library, names in compat.PRIVATE.items():
        assert compat.TESTED[library][1] and all(":" in spec and spec.startswith(library) for spec in names)
        assert all(what for what in names.values())


def _fake(monkeypatch, **attrs):
    """A stand-in lm_eval package whose private modules hold `attrs` ({"module": {name: obj}})."""
    for module, names in attrs.items():
        mod = types.ModuleType(module)
        mod.__path__ = []  # a package, so that its submodules import
        for name, obj in names.items():
            setattr(mod, name, obj)
        monkeypatch.setitem(sys.modules, module, mod)


def test_a_missing_private_name_is_one_clear_line(monkeypatch):
    from dataclasses import dataclass
    from enum import Enum

    @dataclass
    class Entry:
        name: str
        kind: object
        yaml_path: object
        cfg: dict | None = None
        tags: set | None = None

    def load_yaml(path, *, resolve_func=True, recursive=True):
        return {"task": str(path)}

    kinds = Enum("Kind", "TASK GROUP TAG")
    _fake(monkeypatch, lm_eval={}, **{"lm_eval.tasks": {}, "lm_eval.tasks._index": {"Kind": kinds, "Entry": Entry},
                                      "lm_eval.tasks._yaml_loader": {"load_yaml": load_yaml}})
    monkeypatch.setattr(compat, "version", lambda library: "9.9.9")
    compat.check("lm_eval")  # all there
    assert compat.task_kind(Entry("x", kinds.TAG, None)) == "tag"
    assert compat.read_task_yaml("t.yaml") == {"task": "t.yaml"}
    monkeypatch.delattr(sys.modules["lm_eval.tasks._yaml_loader"], "load_yaml")
    for call in (lambda: compat.check("lm_eval"), lambda: compat.read_task_yaml("t.yaml")):
        with pytest.raises(compat.LibraryMismatch) as e:
            call()
        text = str(e.value)
        assert "lm-eval 9.9.9" in text and "lm_eval.tasks._yaml_loader.load_yaml" in text
        assert "tested with lm-eval 0.4.13" in text and "pip install 'lm-eval==0.4.13'" in text and "\n" not in text
    assert isinstance(e.value, compat.UserError)  # the `ettin` command prints it as one line, exit 2


def test_a_changed_shape_is_refused(monkeypatch):
    from enum import Enum

    _fake(monkeypatch, lm_eval={}, **{"lm_eval.tasks": {}, "lm_eval.tasks._index": {
        "Kind": Enum("Kind", "TASK GROUP"), "Entry": object}, "lm_eval.tasks._yaml_loader": {"load_yaml": len}})
    with pytest.raises(compat.LibraryMismatch, match=r"Kind \(TAG, GROUP\)"):
        compat.check("lm_eval")


def test_installed_libraries_pass_and_fail_clearly(monkeypatch, capsys):
    for library in compat.TESTED:
        if importlib.util.find_spec(library) is None:
            continue
        compat.check(library)
    pytest.importorskip("lm_eval")
    from ettin.cli import main as ettin_main

    loader = importlib.import_module("lm_eval.tasks._yaml_loader")
    monkeypatch.delattr(loader, "load_yaml")
    assert ettin_main(["lm-eval", "no-such-model", "--tasks", "piqa"]) == 2  # before the model is even looked at
    err = capsys.readouterr().err
    assert "lm_eval.tasks._yaml_loader.load_yaml" in err and compat.version("lm_eval") in err
    assert "Traceback" not in err
