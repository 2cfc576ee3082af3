"""Dependencies: every third-party import is declared (core or an extra), faiss-cpu and faiss-gpu are
alternatives, and a missing optional module is one line naming the extra that installs it."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from bench.core.errors import BenchError

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

#: Import name -> the distribution that provides it, where the two differ or the name is an extra's.
PROVIDERS = {"sklearn": "scikit-learn", "skimage": "scikit-image", "PIL": "pillow", "cv2": "opencv-python-headless",
             "faiss": ("faiss-cpu", "faiss-gpu")}
OURS = {"bench", "attacks", "defenses", "tests", "advbench_example"}
#: Imported where present, deliberately undeclared: torchattacks pins an old requests that breaks mlflow
#: (bench.benchmarks.attacks; `tox -e bench-attacks-peers` installs it in its own environment).
UNDECLARED = {"torchattacks"}


def _dist(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()


def _imports(root: Path) -> set[str]:
    names: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_every_third_party_import_is_declared():
    core = {_dist(r) for r in PYPROJECT["dependencies"]}
    extras = {name: {_dist(r) for r in reqs} for name, reqs in PYPROJECT["optional-dependencies"].items()}
    declared = core.union(*extras.values())
    third_party = set()
    for pkg in ("bench", "attacks", "defenses"):
        third_party |= _imports(REPO / pkg) - set(sys.stdlib_module_names) - OURS - UNDECLARED
    missing = []
    for module in sorted(third_party):
        dists = PROVIDERS.get(module, module.replace("_", "-"))
        if not set(dists if isinstance(dists, tuple) else [dists]) & declared:
            missing.append(f"{module} ({dists})")
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
    assert "scipy" in core  # bench.core.imagenet reads the devkit's meta.mat with it


def test_faiss_is_an_alternative_not_stacked():
    core = {_dist(r) for r in PYPROJECT["dependencies"]}
    extras = {name: {_dist(r) for r in reqs} for name, reqs in PYPROJECT["optional-dependencies"].items()}
    assert not {"faiss-cpu", "faiss-gpu"} & core
    assert extras["cpu"] == {"faiss-cpu"} and extras["gpu"] == {"faiss-gpu"}
    assert not any({"faiss-cpu", "faiss-gpu"} <= deps for deps in extras.values())
    # One optional feature each: OpenCV (PASS) and robustbench (its model source) are not core.
    assert "opencv-python-headless" in extras["pass"] and "robustbench" in extras["robustbench"]
    assert not {"opencv-python-headless", "robustbench"} & core
    # Kept core: the attack-strength check compares our attacks with these peers.
    assert {"foolbox", "pyautoattack"} <= core


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_missing_faiss_names_both_extras(monkeypatch):
    from defenses.knn_index import KnnIndex

    monkeypatch.setitem(sys.modules, "faiss", None)  # what `import faiss` sees when neither wheel is there
    with pytest.raises(BenchError) as exc:
        KnnIndex(torch.randn(8, 4))
    msg = _one_line(exc)
    assert "faiss" in msg and "'.[cpu]'" in msg and "'.[gpu]'" in msg


def test_missing_opencv_names_the_pass_extra(monkeypatch):
    from bench.run.model_metrics import pass_score

    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert pass_score(x, x).shape == (2,)  # installed here: the metric runs
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(BenchError) as exc:
        pass_score(x, x)
    msg = _one_line(exc)
    assert "PASS" in msg and "opencv" in msg and "'.[pass]'" in msg


def test_missing_robustbench_names_its_extra(monkeypatch, tmp_path):
    from bench.core.zoo import load_robustbench

    monkeypatch.setitem(sys.modules, "robustbench", None)
    with pytest.raises(BenchError) as exc:
        load_robustbench("robustbench:Standard", model_dir=tmp_path)
    msg = _one_line(exc)
    assert "robustbench" in msg and "'.[robustbench]'" in msg
    assert not any(tmp_path.iterdir())  # nothing downloaded or written


def test_a_missing_faiss_fails_the_neighbour_cell_with_that_line(monkeypatch):
    """Through a real defense: deepnn on a tiny model, as a grid cell would prepare it."""
    import defenses
    from bench.core import models
    from bench.core.data import Dataset

    monkeypatch.setitem(sys.modules, "faiss", None)
    gen = torch.Generator().manual_seed(0)
    train = Dataset("digits", "train", torch.rand(16, 1, 8, 8, generator=gen), torch.arange(16) % 10, 10)
    model = models.create("tiny-cnn", 10, 1).eval()
    deepnn = defenses.create("deepnn", k=3)
    with pytest.raises(BenchError, match=r"\.\[cpu\].*\.\[gpu\]"):
        deepnn.prepare(model, train)
