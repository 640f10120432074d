"""Small bundled and standard-format datasets.

`load_digits()` reads the 8x8 handwritten digits bundled with the package (the UCI optical
recognition of handwritten digits test set, 1797 images, as scikit-learn ships it).
`load_mnist(path)` reads MNIST-style IDX files (raw or gzip-compressed) from a folder.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["load_digits", "load_mnist", "read_idx"]

_DATA_DIR = Path(__file__).resolve().parent / "data"
_digits_cache: np.ndarray | None = None


def load_digits():
    """Return (x, y): x float32 (1797, 8, 8) in [0, 1] (pixel / 16), y int64 labels 0..9."""
    global _digits_cache
    if _digits_cache is None:
        path = _DATA_DIR / "digits.csv.gz"
        if not path.is_file():
            raise FileNotFoundError(f"[load_digits] the bundled data file {path} is missing; "
                                    "reinstall pydl-nn")
        with gzip.open(path, "rt") as fh:
            table = np.loadtxt(fh, delimiter=",", dtype=np.int64, ndmin=2)
        if table.shape[1] != 65:
            raise ValueError(f"[load_digits] {path} has {table.shape[1]} columns per row, expected 65")
        _digits_cache = table
    table = _digits_cache
    x = (table[:, :64].astype(np.float32) / np.float32(16.0)).reshape(-1, 8, 8)
    y = table[:, 64].copy()
    return x, y


# ----------------------------------------------------------------------------------------------
# IDX (MNIST) files
# ----------------------------------------------------------------------------------------------
_IDX_UBYTE = 0x08
_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dims (N, rows, cols)
_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dim (N,)


def _read_bytes(path: Path, op: str) -> bytes:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"[{op}] cannot read {path}: {exc}") from exc


def read_idx(path, expected_magic: int | None = None) -> np.ndarray:
    """Read one unsigned-byte IDX file (raw or .gz) into a uint8 array of its declared shape."""
    op = "read_idx"
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"[{op}] no such file: {path}")
    raw = _read_bytes(path, op)
    if len(raw) < 4:
        raise ValueError(f"[{op}] {path} is truncated: {len(raw)} bytes, too short for an IDX header")
    magic = struct.unpack(">I", raw[:4])[0]
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(f"[{op}] {path} has magic number 0x{magic:08x}, expected 0x{expected_magic:08x}")
    if (magic >> 16) != 0 or ((magic >> 8) & 0xFF) != _IDX_UBYTE or (magic & 0xFF) == 0:
        raise ValueError(f"[{op}] {path} has magic number 0x{magic:08x}, which is not an unsigned-byte "
                         "IDX file (expected 0x000008NN)")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"[{op}] {path} is truncated: {len(raw)} bytes, header needs {header}")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    count = int(np.prod(shape, dtype=np.int64))
    have = len(raw) - header
    if have < count:
        raise ValueError(f"[{op}] {path} is truncated: shape {shape} needs {count} data bytes, found {have}")
    if have > count:
        raise ValueError(f"[{op}] {path} has {have - count} unexpected trailing bytes after the "
                         f"{count} data bytes of shape {shape}")
    return np.frombuffer(raw, dtype=np.uint8, count=count, offset=header).reshape(shape)


def _find(folder: Path, stem: str, op: str) -> Path:
    """Locate `stem` as distributed (`train-images-idx3-ubyte`) or with a dot before idx, raw or .gz."""
    dotted = stem.replace("-idx", ".idx")
    candidates = [stem, stem + ".gz", dotted, dotted + ".gz"]
    for name in candidates:
        p = folder / name
        if p.is_file():
            return p
    raise FileNotFoundError(f"[{op}] none of {candidates} found in {folder}")


def load_mnist(path, kind: str = "train"):
    """Read MNIST (or a same-format set such as Fashion-MNIST) from a folder of IDX files.

    kind="train" reads train-images-idx3-ubyte / train-labels-idx1-ubyte, kind="test" the
    t10k-... pair; each may be gzip-compressed (.gz). Returns x float32 (N, rows, cols) in [0, 1]
    (pixel / 255) and y int64 (N,).
    """
    op = "load_mnist"
    if kind not in ("train", "test"):
        raise ValueError(f"[{op}] kind must be 'train' or 'test', got {kind!r}")
    folder = Path(os.fspath(path)).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"[{op}] folder not found: {folder}")
    prefix = "train" if kind == "train" else "t10k"
    img_path = _find(folder, f"{prefix}-images-idx3-ubyte", op)
    lbl_path = _find(folder, f"{prefix}-labels-idx1-ubyte", op)
    try:
        images = read_idx(img_path, _IMAGES_MAGIC)
        labels = read_idx(lbl_path, _LABELS_MAGIC)
    except ValueError as exc:
        raise ValueError(str(exc).replace("[read_idx]", f"[{op}]")) from exc
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"[{op}] {img_path.name} holds {images.shape[0]} images but {lbl_path.name} "
                         f"holds {labels.shape[0]} labels")
    x = images.astype(np.float32) / np.float32(255.0)
    y = labels.astype(np.int64)
    return x, y
