"""Datasets for the network experiments (section 6, appendix F), resident on the training device.

CIFAR-10 and CIFAR-100 are read from the official python archives (cifar-10-python.tar.gz,
cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html) straight out of the
tar.gz, or from the folder it extracts to. Each batch is a pickled dict whose b"data" is a uint8
array (n, 3072): per image 1024 red, then 1024 green, then 1024 blue bytes, each a 32x32 image in
row-major order, so a plain reshape to (n, 3, 32, 32) gives NCHW. Pixels are scaled to [0, 1] and
normalized per channel with the paper's constants (appendix F); there is no augmentation, since
the trainer draws batches with replacement from the fixed tensors.

The archives are pickles, and unpickling runs code: only load archives from a source you trust.

The 8x8 digits bundled with scikit-learn (1797 images, 10 classes, one channel) stand in for CIFAR
in CPU-scale runs; they are split once, stratified, with a fixed seed, and standardized by the
train split's scalar mean and standard deviation.
"""

from __future__ import annotations

import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from thermosgd.nn.config import DATASETS

__all__ = ["DATASETS", "NORMALIZATION", "DataError", "Dataset", "load_data", "load_dataset"]


# Per-channel (mean, std) of the CIFAR train sets on pixels in [0, 1] (paper, appendix F).
NORMALIZATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}

_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
_CIFAR_PIXELS = 3 * 32 * 32
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_SPLIT_SEED = 0  # fixed: the digits split never depends on subset_seed
_MIN_IMAGE_SIZE = 8  # the ConvNet pools three times by 2


class DataError(ValueError):
    """A missing or malformed dataset; the message names the file expected and where."""


@dataclass(frozen=True)
class _CifarFormat:
    title: str  # human name in messages
    archive: str  # official tar.gz file name
    folder: str  # the folder the archive extracts to (also its member prefix)
    train: tuple[str, ...]  # train batch members, in order
    test: tuple[str, ...]  # test batch members
    label_key: bytes  # key of the labels in each batch dict
    num_classes: int


_CIFAR = {
    "cifar10": _CifarFormat("CIFAR-10", "cifar-10-python.tar.gz", "cifar-10-batches-py",
                            tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                            b"labels", 10),
    "cifar100": _CifarFormat("CIFAR-100", "cifar-100-python.tar.gz", "cifar-100-python",
                             ("train",), ("test",), b"fine_labels", 100),
}


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split held as whole tensors on one device (no loader, no epochs)."""

    name: str  # one of DATASETS
    train_x: torch.Tensor  # (n, C, H, W) float32, normalized
    train_y: torch.Tensor  # (n,) int64 class indices
    test_x: torch.Tensor  # (m, C, H, W) float32, normalized like train_x
    test_y: torch.Tensor  # (m,) int64
    num_classes: int

    def __post_init__(self):
        for x, y, split in ((self.train_x, self.train_y, "train"),
                            (self.test_x, self.test_y, "test")):
            if x.ndim != 4 or y.ndim != 1 or x.shape[0] != y.shape[0]:
                raise ValueError(f"{split} split: expected x (n, C, H, W) and y (n,), "
                                 f"got {tuple(x.shape)} and {tuple(y.shape)}")
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise ValueError(f"train images {tuple(self.train_x.shape[1:])} and test images "
                             f"{tuple(self.test_x.shape[1:])} differ in shape")

    @property
    def in_channels(self) -> int:
        return self.train_x.shape[1]

    @property
    def image_size(self) -> int:
        return self.train_x.shape[-1]

    @property
    def num_train(self) -> int:
        return self.train_x.shape[0]

    @property
    def num_test(self) -> int:
        return self.test_x.shape[0]

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, num_train={self.num_train}, "
                f"num_test={self.num_test}, in_channels={self.in_channels}, "
                f"image_size={self.image_size}, num_classes={self.num_classes}, "
                f"device={str(self.device)!r})")


def load_dataset(name: str, *, root: str | Path | None = None,
                 device: str | torch.device = "cpu", samples_per_class: int | None = None,
                 subset_seed: int = 0, image_size: int | None = None,
                 label_noise: float = 0.0, label_noise_seed: int = 0) -> Dataset:
    """Load a dataset as normalized float32 tensors on `device`.

    name: one of DATASETS. root: for CIFAR, the official .tar.gz, a directory holding it, the
    extracted folder, or a directory holding that folder; ignored for digits.
    samples_per_class: keep exactly this many train images per class, drawn with
    numpy's Generator(subset_seed); the test set is never subsampled.
    image_size: resize both splits (bilinear, after normalization) to image_size x image_size.
    label_noise: replace this fraction of the train labels (the first round(fraction * n) of a
    permutation drawn with numpy's Generator(label_noise_seed)) by a class drawn uniformly
    from all classes, so the true label survives at 1/num_classes of them; the test labels stay
    clean. Not in the paper: it keeps a small network on an easy set from interpolating, so
    that SGD reaches a stationary state (see benchmarks/RESULTS.md, digits validation).
    Raises DataError for a missing or malformed archive, ValueError for bad arguments.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if samples_per_class is not None:
        _check_int("samples_per_class", samples_per_class, 1)
    if not (isinstance(label_noise, (int, float)) and 0 <= label_noise <= 1):
        raise ValueError(f"label_noise must be a fraction in [0, 1], got {label_noise!r}")
    if image_size is not None:
        _check_int("image_size", image_size, _MIN_IMAGE_SIZE,
                   " (the networks pool three times by 2)")
    device = torch.device(device)

    if name == "digits":
        train_x, train_y, test_x, test_y, num_classes = _load_digits()
    else:
        train_x, train_y, test_x, test_y = _load_cifar(_CIFAR[name], root)
        num_classes = _CIFAR[name].num_classes
    if samples_per_class is not None:
        keep = _subset_indices(train_y, num_classes, samples_per_class, subset_seed, name)
        train_x, train_y = train_x[keep], train_y[keep]
    if label_noise:
        train_y = noisy_labels(train_y, num_classes, label_noise, label_noise_seed)

    # One host-to-device copy per array; for CIFAR the uint8 pixels travel, 4x smaller than floats.
    train_x, test_x = (torch.from_numpy(np.ascontiguousarray(x)).to(device)
                       for x in (train_x, test_x))
    train_y, test_y = (torch.from_numpy(y.astype(np.int64)).to(device) for y in (train_y, test_y))
    if name == "digits":
        train_x, test_x = train_x.float(), test_x.float()  # standardized already on the host
    else:
        mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1)
                     for v in NORMALIZATION[name])
        train_x, test_x = ((x.float() / 255 - mean) / std for x in (train_x, test_x))
    if image_size is not None and image_size != train_x.shape[-1]:
        train_x, test_x = (F.interpolate(x, size=(image_size, image_size), mode="bilinear",
                                         align_corners=False) for x in (train_x, test_x))
    return Dataset(name, train_x, train_y, test_x, test_y, num_classes)


def noisy_labels(labels: np.ndarray, num_classes: int, fraction: float,
                 seed: int) -> np.ndarray:
    """A copy of ``labels`` with round(fraction * n) of them, chosen by a seeded permutation,
    replaced by classes drawn uniformly (symmetric label noise)."""
    rng = np.random.default_rng(seed)
    labels = np.array(labels, copy=True)
    chosen = rng.permutation(labels.size)[: round(fraction * labels.size)]
    labels[chosen] = rng.integers(0, num_classes, size=chosen.size)
    return labels


def _check_int(label: str, value, minimum: int, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{label} must be an integer >= {minimum}{why}, got {value!r}")


def _subset_indices(labels: np.ndarray, num_classes: int, per_class: int, seed: int,
                    name: str) -> np.ndarray:
    """Sorted indices of exactly `per_class` train examples of every class."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if members.size < per_class:
            raise ValueError(f"samples_per_class={per_class} but class {c} of {name} has only "
                             f"{members.size} training images; lower samples_per_class")
        chosen.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def _load_digits():
    """scikit-learn's 8x8 digits: fixed stratified 80/20 split, standardized by train stats."""
    from sklearn.datasets import load_digits  # lazy: only the digits need scikit-learn

    pixels, labels = load_digits(return_X_y=True)  # (1797, 64) values 0..16, (1797,)
    rng = np.random.default_rng(_DIGITS_SPLIT_SEED)
    is_test = np.zeros(labels.shape[0], dtype=bool)
    num_classes = int(labels.max()) + 1
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        n_test = round(_DIGITS_TEST_FRACTION * members.size)
        is_test[rng.choice(members, size=n_test, replace=False)] = True
    images = (pixels / 16.0).reshape(-1, 1, 8, 8)
    train = images[~is_test]
    # Scalar statistics (not per pixel): several border pixels are always 0 and have zero std.
    mean, std = train.mean(), train.std()
    train_x = ((train - mean) / std).astype(np.float32)
    test_x = ((images[is_test] - mean) / std).astype(np.float32)
    return train_x, labels[~is_test], test_x, labels[is_test], num_classes


def _load_cifar(fmt: _CifarFormat, root):
    """(train_x uint8 (n, 3, 32, 32), train_y, test_x, test_y) from the archive or folder."""
    if root is None:
        raise DataError(f"{fmt.title} needs its location: pass root= the path of {fmt.archive} "
                        f"or of the extracted folder {fmt.folder} (from {_CIFAR_URL}); this "
                        f"package never downloads")
    root = Path(root).expanduser().absolute()  # messages name a full path
    if not root.exists():
        raise DataError(f"{fmt.title} root {root} does not exist: expected {fmt.archive}, the "
                        f"folder {fmt.folder}, or a directory holding either")
    source = _locate(fmt, root)
    members = fmt.train + fmt.test
    if source.is_dir():
        batches = {m: _read_folder_member(source / m, fmt) for m in members}
    else:
        batches = _read_archive(source, fmt, members)
    train = [batches[m] for m in fmt.train]
    test = [batches[m] for m in fmt.test]
    return (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
            np.concatenate([x for x, _ in test]), np.concatenate([y for _, y in test]))


def _locate(fmt: _CifarFormat, root: Path) -> Path:
    """The archive file or the extracted folder that `root` designates."""
    if root.is_file():
        return root
    if (root / fmt.train[0]).is_file():  # root is the extracted folder itself
        return root
    if (root / fmt.archive).is_file():
        return root / fmt.archive
    if (root / fmt.folder).is_dir():
        return root / fmt.folder
    raise DataError(f"{fmt.title} not found under {root}: expected {fmt.archive} or the folder "
                    f"{fmt.folder} (the official python version from {_CIFAR_URL})")


def _read_folder_member(path: Path, fmt: _CifarFormat):
    if not path.is_file():
        raise DataError(f"{fmt.title} folder {path.parent} lacks the batch file {path.name}")
    with open(path, "rb") as f:
        return _decode_batch(f, str(path), fmt)


def _read_archive(path: Path, fmt: _CifarFormat, members: tuple[str, ...]) -> dict:
    """Decode the wanted members in one pass over the tar.gz (gzip cannot seek backwards
    cheaply, so looking members up by name would decompress the archive several times)."""
    wanted = {f"{fmt.folder}/{m}": m for m in members}
    batches = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for info in tar:
                member = wanted.get(info.name.removeprefix("./"))
                if member is None or not info.isfile():
                    continue
                batches[member] = _decode_batch(tar.extractfile(info), f"{path}:{info.name}", fmt)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path} is not a readable {fmt.title} tar.gz archive "
                        f"({fmt.archive} from {_CIFAR_URL}): {exc}") from exc
    missing = [f"{fmt.folder}/{m}" for m in members if m not in batches]
    if missing:
        raise DataError(f"{fmt.title} archive {path} lacks the member(s) {', '.join(missing)}")
    return batches


def _decode_batch(f, where: str, fmt: _CifarFormat):
    """Validate one pickled batch; return (pixels uint8 (n, 3, 32, 32), labels int64 (n,))."""
    try:
        batch = pickle.load(f, encoding="bytes")
    except Exception as exc:  # unpickling garbage can raise almost anything
        raise DataError(f"{where}: not a {fmt.title} batch pickle ({exc!r})") from exc
    if not isinstance(batch, dict) or b"data" not in batch or fmt.label_key not in batch:
        found = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataError(f"{where}: expected a dict with keys b'data' and {fmt.label_key!r}, "
                        f"found {found}")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[fmt.label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_PIXELS:
        raise DataError(f"{where}: b'data' must be uint8 of shape (n, {_CIFAR_PIXELS}), got "
                        f"{data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],) or (labels.size
                                            and not np.issubdtype(labels.dtype, np.integer)):
        raise DataError(f"{where}: {fmt.label_key!r} must hold {data.shape[0]} integer labels, "
                        f"got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= fmt.num_classes):
        raise DataError(f"{where}: labels must lie in [0, {fmt.num_classes}), found "
                        f"{labels.min()}..{labels.max()}")
    # Rows are channel-major (1024 R, 1024 G, 1024 B), each channel row-major: NCHW as is.
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_data(config, device) -> Dataset:
    """The data a run's ``config`` (TrainConfig) trains on, on ``device``; checked against the
    batch size."""
    data = load_dataset(config.dataset, root=config.data, device=device,
                        samples_per_class=config.samples_per_class, image_size=config.image_size,
                        label_noise=config.label_noise)
    if data.num_train // config.batch_size < 2:  # Tr Sigma needs two disjoint batches a pass
        raise ValueError(f"--batch-size {config.batch_size} is too large for the "
                         f"{data.num_train} training samples of {config.dataset}: give at most "
                         f"{data.num_train // 2}")
    return data

