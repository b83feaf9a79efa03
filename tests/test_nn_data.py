"""Tests for thermosgd.nn.data on tiny archives written in the official CIFAR python format."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from thermosgd.nn.data import DATASETS, NORMALIZATION, DataError, Dataset, load_dataset

_LAYOUT = {  # archive, folder, train members, test members, label key, classes
    "cifar10": ("cifar-10-python.tar.gz", "cifar-10-batches-py",
                [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", 10),
    "cifar100": ("cifar-100-python.tar.gz", "cifar-100-python", ["train"], ["test"],
                 b"fine_labels", 100),
}
_ROWS = {"cifar10": (20, 20), "cifar100": (300, 100)}  # rows per train batch, test rows


def _make_batches(name: str, seed: int = 0) -> dict[str, dict]:
    """Random uint8 batches; labels cycle through the classes, so every class is present."""
    _, _, train, test, key, classes = _LAYOUT[name]
    train_rows, test_rows = _ROWS[name]
    rng = np.random.default_rng(seed)
    batches = {}
    for member in train + test:
        rows = test_rows if member in test else train_rows
        labels = rng.permutation(np.arange(rows) % classes)
        batches[member] = {b"data": rng.integers(0, 256, (rows, 3072), dtype=np.uint8),
                           key: [int(v) for v in labels], b"batch_label": b"synthetic"}
    meta = "batches.meta" if name == "cifar10" else "meta"
    batches[meta] = {b"label_names": [b"c%d" % i for i in range(classes)]}
    return batches


def _write(name: str, directory: Path, batches: dict, *, extracted: bool = False) -> Path:
    """Write `batches` as the official tar.gz (or its extracted folder) inside `directory`."""
    archive, folder, *_ = _LAYOUT[name]
    directory.mkdir(parents=True, exist_ok=True)
    if extracted:
        (directory / folder).mkdir()
        for member, content in batches.items():
            (directory / folder / member).write_bytes(pickle.dumps(content, protocol=2))
        return directory / folder
    with tarfile.open(directory / archive, "w:gz") as tar:
        for member, content in batches.items():
            payload = pickle.dumps(content, protocol=2)
            info = tarfile.TarInfo(f"{folder}/{member}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return directory / archive


@pytest.fixture(scope="module", params=["cifar10", "cifar100"])
def archive(request, tmp_path_factory):
    """(name, batches, path of the tar.gz) for each CIFAR variant."""
    name = request.param
    batches = _make_batches(name)
    return name, batches, _write(name, tmp_path_factory.mktemp(name), batches)


def _expected(name: str, batches: dict, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Reference decoding, written pixel by pixel from the format's description."""
    _, _, train, test, key, _ = _LAYOUT[name]
    members = train if split == "train" else test
    data = np.concatenate([batches[m][b"data"] for m in members])
    labels = np.concatenate([batches[m][key] for m in members])
    mean, std = (np.array(v) for v in NORMALIZATION[name])
    images = np.empty((data.shape[0], 3, 32, 32))
    for c in range(3):  # 1024 bytes per channel, each a row-major 32x32 plane
        for r in range(32):
            images[:, c, r, :] = data[:, c * 1024 + r * 32: c * 1024 + (r + 1) * 32]
    return (images / 255 - mean[:, None, None]) / std[:, None, None], labels


def test_cifar_shapes_dtypes_device(archive):
    name, _, path = archive
    ds = load_dataset(name, root=path)
    train_rows, test_rows = _ROWS[name]
    n = train_rows * len(_LAYOUT[name][2])
    assert isinstance(ds, Dataset) and ds.name == name
    assert ds.train_x.shape == (n, 3, 32, 32) and ds.test_x.shape == (test_rows, 3, 32, 32)
    assert ds.train_y.shape == (n,) and ds.test_y.shape == (test_rows,)
    assert ds.train_x.dtype == ds.test_x.dtype == torch.float32
    assert ds.train_y.dtype == ds.test_y.dtype == torch.int64
    assert ds.device == torch.device("cpu") and ds.test_y.device == torch.device("cpu")
    assert (ds.in_channels, ds.image_size, ds.num_train, ds.num_test) == (3, 32, n, test_rows)
    assert ds.num_classes == _LAYOUT[name][5]
    assert "num_train" in repr(ds) and len(repr(ds)) < 200  # no tensor dump


def test_cifar_pixels_round_trip(archive):
    name, batches, path = archive
    ds = load_dataset(name, root=path)
    for split, x, y in (("train", ds.train_x, ds.train_y), ("test", ds.test_x, ds.test_y)):
        images, labels = _expected(name, batches, split)
        # float32 arithmetic on values of order 1: relative error ~1e-7, 1e-5 leaves room.
        np.testing.assert_allclose(x.numpy(), images, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(y.numpy(), labels)


def test_cifar_known_pixel_lands_at_channel_row_col(tmp_path):
    batches = _make_batches("cifar10")
    data = batches["data_batch_2"][b"data"]
    data[:] = 0
    channel, row, col = 2, 5, 17  # blue plane, an asymmetric position: catches HWC/transposes
    data[3, channel * 1024 + row * 32 + col] = 200
    ds = load_dataset("cifar10", root=_write("cifar10", tmp_path, batches))
    image = ds.train_x[20 + 3]  # batch 2 follows the 20 rows of batch 1
    mean, std = NORMALIZATION["cifar10"]
    assert image[channel, row, col].item() == pytest.approx((200 / 255 - mean[2]) / std[2],
                                                            abs=1e-5)
    background = torch.tensor([-m / s for m, s in zip(mean, std)]).view(3, 1, 1)
    changed = (image - background).abs() > 1e-5
    assert changed.sum().item() == 1 and changed[channel, row, col]


@pytest.mark.parametrize("form", ["archive", "archive_dir", "folder", "folder_parent"])
def test_cifar_root_forms_agree(archive, tmp_path, form):
    name, batches, path = archive
    reference = load_dataset(name, root=path)
    if form.startswith("archive"):
        root = path if form == "archive" else path.parent
    else:
        folder = _write(name, tmp_path, batches, extracted=True)
        root = folder if form == "folder" else folder.parent
    ds = load_dataset(name, root=str(root))  # strings work as well as Paths
    for a, b in ((ds.train_x, reference.train_x), (ds.train_y, reference.train_y),
                 (ds.test_x, reference.test_x), (ds.test_y, reference.test_y)):
        assert torch.equal(a, b)


def test_cifar_subset_exact_and_seeded(archive):
    name, _, path = archive
    k = 2
    full = load_dataset(name, root=path)
    ds = load_dataset(name, root=path, samples_per_class=k, subset_seed=1)
    assert torch.equal(torch.bincount(ds.train_y, minlength=ds.num_classes),
                       torch.full((ds.num_classes,), k))
    assert torch.equal(ds.test_x, full.test_x) and torch.equal(ds.test_y, full.test_y)
    again = load_dataset(name, root=path, samples_per_class=k, subset_seed=1)
    other = load_dataset(name, root=path, samples_per_class=k, subset_seed=2)
    assert torch.equal(ds.train_x, again.train_x)
    assert not torch.equal(ds.train_x, other.train_x)
    # each kept image is one of the full train set's, with its label
    match = (ds.train_x.flatten(1)[:, None] == full.train_x.flatten(1)[None]).all(-1)
    rows = match.float().argmax(1)
    assert match.any(1).all() and torch.equal(full.train_y[rows], ds.train_y)


def test_cifar_subset_too_large(archive):
    name, _, path = archive
    with pytest.raises(ValueError, match="samples_per_class=50 but class 0"):
        load_dataset(name, root=path, samples_per_class=50)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_missing(tmp_path, name):
    archive, folder, *_ = _LAYOUT[name]
    with pytest.raises(DataError) as err:
        load_dataset(name, root=tmp_path)
    message = str(err.value)
    assert archive in message and folder in message and str(tmp_path) in message
    assert "\n" not in message
    with pytest.raises(DataError, match="root="):
        load_dataset(name)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(name, root=tmp_path / "nowhere")


def test_cifar_garbage_archive(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(b"this is not a gzip file" * 10)
    with pytest.raises(DataError, match="cifar-10-python.tar.gz"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar_missing_member(tmp_path):
    batches = _make_batches("cifar10")
    del batches["test_batch"]
    path = _write("cifar10", tmp_path, batches)
    with pytest.raises(DataError, match="cifar-10-batches-py/test_batch") as err:
        load_dataset("cifar10", root=path)
    assert str(path) in str(err.value)


def test_cifar_missing_file_in_folder(tmp_path):
    batches = _make_batches("cifar100")
    del batches["test"]
    folder = _write("cifar100", tmp_path, batches, extracted=True)
    with pytest.raises(DataError, match="test"):
        load_dataset("cifar100", root=folder)


@pytest.mark.parametrize("defect, pattern", [
    ("columns", r"data_batch_3.*\(n, 3072\).*3071"),
    ("labels_length", r"data_batch_3.*must hold 20 integer labels"),
    ("labels_range", r"data_batch_3.*labels must lie in \[0, 10\)"),
    ("keys", r"data_batch_3.*expected a dict with keys"),
    ("pickle", r"data_batch_3.*not a CIFAR-10 batch pickle"),
])
@pytest.mark.parametrize("extracted", [False, True])
def test_cifar_malformed_batch(tmp_path, defect, pattern, extracted):
    batches = _make_batches("cifar10")
    batch = batches["data_batch_3"]
    if defect == "columns":
        batch[b"data"] = batch[b"data"][:, :3071]
    elif defect == "labels_length":
        batch[b"labels"] = batch[b"labels"][:-1]
    elif defect == "labels_range":
        batch[b"labels"][0] = 10
    elif defect == "keys":
        batch[b"fine_labels"] = batch.pop(b"labels")
    path = _write("cifar10", tmp_path, batches, extracted=extracted)
    if defect == "pickle":
        target = path / "data_batch_3" if extracted else None
        if extracted:
            target.write_bytes(b"\x00garbage")
        else:  # rebuild the archive with a member that is not a pickle
            path.unlink()
            with tarfile.open(path, "w:gz") as tar:
                info = tarfile.TarInfo("cifar-10-batches-py/data_batch_3")
                info.size = 8
                tar.addfile(info, io.BytesIO(b"\x00garbage"))
    with pytest.raises(DataError, match=pattern):
        load_dataset("cifar10", root=path)


def test_cifar_image_size(archive):
    name, _, path = archive
    native = load_dataset(name, root=path)
    assert torch.equal(load_dataset(name, root=path, image_size=32).train_x, native.train_x)
    small = load_dataset(name, root=path, image_size=16)
    assert small.train_x.shape[1:] == (3, 16, 16) and small.test_x.shape[1:] == (3, 16, 16)
    # bilinear halving without antialias averages each 2x2 block (sample points at the centres)
    pooled = torch.nn.functional.avg_pool2d(native.train_x, 2)
    torch.testing.assert_close(small.train_x, pooled)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", root="ignored/for/digits")


def test_digits_shapes(digits):
    assert digits.num_classes == 10 and digits.in_channels == 1 and digits.image_size == 8
    assert digits.num_train + digits.num_test == 1797
    assert digits.train_x.dtype == torch.float32 and digits.train_y.dtype == torch.int64


def test_digits_split_stratified_and_deterministic(digits):
    train_counts = torch.bincount(digits.train_y, minlength=10)
    test_counts = torch.bincount(digits.test_y, minlength=10)
    totals = train_counts + test_counts
    assert torch.equal(test_counts, torch.round(0.2 * totals).long())
    again = load_dataset("digits")
    subset = load_dataset("digits", samples_per_class=5, subset_seed=7)
    for other in (again, subset):  # the test split never depends on subset_seed
        assert torch.equal(other.test_x, digits.test_x)
        assert torch.equal(other.test_y, digits.test_y)
    assert torch.equal(again.train_x, digits.train_x)
    assert torch.equal(torch.bincount(subset.train_y), torch.full((10,), 5))


def test_digits_standardized(digits):
    # exact in float64 by construction; float32 storage adds ~1e-7 relative error per value
    assert abs(digits.train_x.mean().item()) < 1e-5
    assert abs(digits.train_x.std(correction=0).item() - 1) < 1e-5
    # the test split is standardized with the train statistics, so only roughly centred
    assert abs(digits.test_x.mean().item()) < 0.1


def test_digits_resized(digits):
    big = load_dataset("digits", image_size=32)
    assert big.train_x.shape == (digits.num_train, 1, 32, 32)
    assert big.test_x.shape == (digits.num_test, 1, 32, 32)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"name": "mnist"}, "cifar10, cifar100, digits"),
    ({"name": "digits", "image_size": 4}, "image_size must be an integer >= 8"),
    ({"name": "digits", "image_size": 16.0}, "image_size must be an integer >= 8"),
    ({"name": "digits", "image_size": True}, "image_size must be an integer >= 8"),
    ({"name": "digits", "samples_per_class": 0}, "samples_per_class must be an integer >= 1"),
    ({"name": "cifar10", "samples_per_class": 0}, "samples_per_class"),  # before any I/O
    ({"name": "digits", "label_noise": 1.5}, r"label_noise must be a fraction in \[0, 1\]"),
    ({"name": "digits", "label_noise": -0.1}, r"label_noise must be a fraction"),
])
def test_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern) as err:
        load_dataset(**kwargs)
    assert not isinstance(err.value, DataError)


def test_label_noise_replaces_a_seeded_fraction_of_train_labels_only(digits):
    noisy = load_dataset("digits", label_noise=0.3)
    changed = (noisy.train_y != digits.train_y).double().mean().item()
    # 30 % are redrawn and 1 in 10 of those lands on the true class again: ~27 % change
    assert 0.24 < changed < 0.30
    torch.testing.assert_close(noisy.test_y, digits.test_y)
    torch.testing.assert_close(noisy.train_x, digits.train_x)
    again = load_dataset("digits", label_noise=0.3)
    assert torch.equal(again.train_y, noisy.train_y)
    other = load_dataset("digits", label_noise=0.3, label_noise_seed=1)
    assert not torch.equal(other.train_y, noisy.train_y)
    assert torch.equal(load_dataset("digits", label_noise=0.0).train_y, digits.train_y)


def test_constants():
    assert DATASETS == ("cifar10", "cifar100", "digits")
    assert issubclass(DataError, ValueError)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_digits_on_cuda():
    ds = load_dataset("digits", device="cuda", samples_per_class=3)
    assert ds.device.type == "cuda" and ds.test_y.device.type == "cuda"
