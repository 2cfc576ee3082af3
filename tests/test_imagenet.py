"""ImageNet slice: the file-backed dataset (real sample images and tiny generated folders), the
torchvision ResNets' in-model normalisation and feature layers, and ``name@variant`` lookups."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.core import data, models
from bench.core.errors import BenchError
from bench.core.imagenet import CROP, balanced_order

SAMPLES = Path(os.environ.get("BENCH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / \
    "imagenet-samples"
needs_samples = pytest.mark.skipif(not (SAMPLES / "wnids.txt").is_file(),
                                   reason=f"needs the 100 ImageNet sample images in {SAMPLES}")


def _fake_wnids(n: int = 1000) -> list[str]:
    return [f"n{i:08d}" for i in range(n)]


def _image_folder(root: Path, counts: dict[int, int], split: str = "val") -> list[str]:
    """``root/<split>/<wnid>/<i>.JPEG`` with ``counts[class]`` small random JPEGs, and wnids.txt."""
    from PIL import Image

    wnids = _fake_wnids()
    (root / "wnids.txt").write_text("\n".join(reversed(wnids)) + "\n")  # the loader sorts them itself
    rng = np.random.default_rng(0)
    for c, n in counts.items():
        folder = root / split / wnids[c]
        folder.mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 256, (40 + 7 * i, 60, 3), dtype=np.uint8)
            Image.fromarray(arr).save(folder / f"{wnids[c]}_{i}.JPEG")
    return wnids


@needs_samples
def test_sample_images_labels_follow_wnids_txt_and_order_is_balanced_and_fixed():
    wnids = sorted((SAMPLES / "wnids.txt").read_text().split())
    ds = data.load("imagenet", "test", SAMPLES)
    assert len(ds) == 100 and ds.num_classes == 1000
    # every file's label is its folder's line in the sorted wnids.txt (README: every 10th class)
    assert [wnids.index(p.parent.name) for p in ds.paths] == ds.y.tolist()
    assert sorted(ds.y.tolist()) == list(range(0, 1000, 10))
    again = data.load("imagenet", "test", SAMPLES, limit=20)
    assert again.paths == ds.paths[:20] and torch.equal(again.y, ds.y[:20])
    # spread over the label space, not the first 20 classes in sorted order
    assert max(again.y.tolist()) > 500 and min(again.y.tolist()) < 500


@needs_samples
def test_limit_decodes_only_its_images_as_224_crops_in_unit_range():
    ds = data.load("imagenet", "test", SAMPLES, limit=2)
    assert ds._x is None  # nothing decoded before x is read
    x = ds.x
    assert x.shape == (2, 3, CROP, CROP) and x.dtype == torch.float32
    assert 0 <= float(x.min()) and float(x.max()) <= 1 and float(x.std()) > 0.05


@pytest.mark.slow  # imports torchvision (seconds on a loaded machine)
@needs_samples
def test_preprocessing_matches_torchvision_resize_256_center_crop_224():
    from PIL import Image
    from torchvision import transforms

    ds = data.load("imagenet", "test", SAMPLES, limit=3)
    tv = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    for path, x in zip(ds.paths, ds.x):
        with Image.open(path) as img:
            torch.testing.assert_close(x, tv(img.convert("RGB")))


def test_class_balanced_limit_and_disjoint_offsets(tmp_path):
    counts = {3: 5, 500: 3, 999: 1}
    _image_folder(tmp_path, counts)
    ds = data.load("imagenet", "test", tmp_path)
    assert len(ds) == 9
    for n in range(1, 10):
        seen = Counter(ds.y[:n].tolist())
        # class-balanced: a class with images left is never more than one behind the fullest class
        assert all(seen[c] >= max(seen.values()) - 1 for c in counts if seen[c] < counts[c])
    assert Counter(ds.y[:3].tolist()) == {3: 1, 500: 1, 999: 1}
    assert Counter(ds.y[:7].tolist()) == {3: 3, 500: 3, 999: 1}
    test, train = ds.subset(3), ds.subset(4, offset=3)
    assert not set(test.paths) & set(train.paths)
    assert train.x.shape == (4, 3, CROP, CROP)


def test_balanced_order_sorts_files_within_a_class():
    order = balanced_order([7, 7, 2, 2], ["b", "a", "d", "c"])
    firsts = [order[0], order[1]]
    assert {1, 3} == set(firsts)  # round 0: each class's alphabetically first file
    assert set(order[2:]) == {0, 2}


def test_flat_val_folder_with_ground_truth_file(tmp_path):
    from PIL import Image

    wnids = _fake_wnids()
    (tmp_path / "wnids.txt").write_text("\n".join(wnids))
    (tmp_path / "val").mkdir()
    lines = []
    for i, c in enumerate([5, 5, 42]):
        name = f"ILSVRC2012_val_{i + 1:08d}.JPEG"
        Image.fromarray(np.full((30, 30, 3), 40 * i, dtype=np.uint8)).save(tmp_path / "val" / name)
        lines.append(f"{name} {wnids[c]}")
    (tmp_path / "val_labels.txt").write_text("\n".join(lines))
    ds = data.load("imagenet", "test", tmp_path)
    assert sorted(ds.y.tolist()) == [5, 5, 42]
    assert ds.y.tolist()[:2] in ([5, 42], [42, 5])  # one per class first


def test_flat_val_folder_with_the_official_devkit(tmp_path):
    """The devkit's ground truth holds ILSVRC2012_IDs in its own class order: meta.mat maps them to
    wnids, and the class index is still the wnid's sorted position."""
    import scipy.io
    from PIL import Image

    wnids = _fake_wnids()
    (tmp_path / "wnids.txt").write_text("\n".join(wnids))
    devkit_order = list(reversed(wnids))  # the devkit's IDs do not follow sorted wnids
    synsets = np.array([(i + 1, w, 0) for i, w in enumerate(devkit_order)],
                       dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")])
    data_dir = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    data_dir.mkdir(parents=True)
    scipy.io.savemat(str(data_dir / "meta.mat"), {"synsets": synsets})
    (tmp_path / "val").mkdir()
    ids = []
    for i, c in enumerate([5, 42, 42]):
        Image.fromarray(np.full((30, 30, 3), 40 * i, dtype=np.uint8)).save(
            tmp_path / "val" / f"ILSVRC2012_val_{i + 1:08d}.JPEG")
        ids.append(str(devkit_order.index(wnids[c]) + 1))
    (data_dir / "ILSVRC2012_validation_ground_truth.txt").write_text("\n".join(ids) + "\n")
    ds = data.load("imagenet", "test", tmp_path)
    assert sorted(ds.y.tolist()) == [5, 42, 42]
    (data_dir / "meta.mat").unlink()
    with pytest.raises(BenchError, match="needs meta.mat"):
        data.load("imagenet", "test", tmp_path)


def test_missing_folder_and_missing_wnids_are_one_line(tmp_path):
    with pytest.raises(BenchError) as exc:
        data.load("imagenet", "test", tmp_path / "nowhere")
    assert "\n" not in str(exc.value) and "--data-dir" in str(exc.value)
    (tmp_path / "val" / "n01440764").mkdir(parents=True)
    with pytest.raises(BenchError) as exc:
        data.load("imagenet", "test", tmp_path)
    assert "\n" not in str(exc.value) and "wnids.txt" in str(exc.value)


def test_synthetic_imagenet_has_the_real_shape():
    ds = data.load("imagenet", "test", "/nonexistent", limit=3, synthetic=True)
    assert ds.x.shape == (3, 3, 224, 224) and ds.num_classes == 1000
    assert 0 <= float(ds.x.min()) and float(ds.x.max()) <= 1


@pytest.mark.slow  # three ResNet-18 passes and a torchvision import: ~10-25 s on 2 loaded cores
def test_resnet18_takes_unit_range_input_and_normalises_inside():
    import torchvision

    torch.manual_seed(0)
    model = models.create("resnet18", 1000, 3).eval()
    plain = torchvision.models.resnet18(weights=None, num_classes=1000).eval()
    plain.load_state_dict(model.net.state_dict())
    x = torch.rand(2, 3, 64, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain((x - mean) / std))
        assert not torch.allclose(model(x), plain(x), atol=1e-3)  # so the normalisation is really inside
        f = model.features(x)
        torch.testing.assert_close(model.head(f), model(x))
        f51 = models.layer_features(model, x, "conv_5_1")
    assert f.shape == f51.shape == (2, 512) and not torch.allclose(f, f51)
    with pytest.raises(BenchError):
        models.layer_features(model, x, "conv_9_9")
    with pytest.raises(BenchError):  # a CIFAR ResNet has only its default layer
        models.layer_features(models.create("resnet20", 10, 3), torch.rand(1, 3, 32, 32), "conv_5_1")


def test_plain_torchvision_state_dict_loads_into_the_wrapper():
    import torchvision

    plain = torchvision.models.resnet18(weights=None, num_classes=1000)
    model = models.load_state(models.create("resnet18", 1000, 3), plain.state_dict(), "plain.pt", "resnet18")
    torch.testing.assert_close(model.net.fc.weight, plain.fc.weight)


def test_variant_names_resolve_to_the_registered_method():
    import defenses

    assert "median@k5" in defenses.DEFENSES
    assert defenses.DEFENSES.get("median@k5") is defenses.DEFENSES.get("median")
    with pytest.raises(BenchError):
        defenses.DEFENSES.get("nosuch@k5")


@pytest.mark.slow  # ResNet-18 and faiss imports: over a minute on the loaded 2-core box
def test_neighbour_defenses_search_the_chosen_feature_layer():
    import defenses

    torch.manual_seed(0)
    model = models.create("resnet18", 10, 3).eval()
    x = torch.rand(12, 3, 32, 32)
    ds = data.Dataset("imagenet", "train", x, torch.arange(12) % 10, 10)
    default = defenses.create("deepnn", k=3).prepare(model, ds)
    conv51 = defenses.create("deepnn", k=3, features="conv_5_1").prepare(model, ds)
    with torch.no_grad():
        torch.testing.assert_close(conv51.database.features, models.layer_features(model, x, "conv_5_1"))
        torch.testing.assert_close(default.database.features, model.features(x))
    assert not torch.allclose(conv51.database.features, default.database.features)
    with pytest.raises(BenchError):  # a CIFAR ResNet has no conv_5_1: one line at prepare, not mid-run
        defenses.create("deepnn", k=3, features="conv_5_1").prepare(models.create("resnet20", 10, 3).eval(), ds)


@pytest.mark.slow  # ~6 s on the loaded 2-core box
def test_ride_hidden_layers_builds_table3_imagenet_depth():
    import defenses

    ride = defenses.create("ride", iterations=2, checkpoints=1, hidden_layers=7, est_samples=1)
    x = torch.rand(1, 3, 16, 16)
    out = ride.purify(x, [0])
    assert out.shape == x.shape and not torch.allclose(out, x)
    from defenses.ride import GroupedFCN

    net = GroupedFCN([3, *[32] * 7, 3], 1, [torch.Generator().manual_seed(0)], torch.device("cpu"))
    assert len(net.params) == 2 * 8  # conv1-conv7 and convn, weight and bias each
    with pytest.raises(BenchError):
        defenses.create("ride", hidden_layers=0)


def test_weights_source_is_validated_without_the_network():
    from bench.spec import sources

    sources.validate("std", {"source": "checkpoint", "arch": "resnet50", "weights": "IMAGENET1K_V1"}, "g")
    for bad in ({"source": "checkpoint", "arch": "resnet50", "weights": "W", "checkpoint": "c.pt"},
                {"source": "checkpoint", "model": "m.py:f", "weights": "IMAGENET1K_V1"}):
        with pytest.raises(BenchError) as exc:
            sources.validate("std", bad, "g")
        assert "\n" not in str(exc.value)
