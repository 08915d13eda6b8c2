"""An offline corpus that resembles the papers' CodeParrot (Python source): the `.py` files of the
interpreter's own standard library, present on every machine.

Files are split, not lines: a file goes to validation when the first byte of the SHA-1 of its path
relative to the library is below `VALIDATION_SHARE` × 256 (deterministic, the same on every machine
with the same Python), so no function is half in each split. Tokens are bytes (a vocabulary of 256,
no tokenizer to train or download): perplexity is per byte. Files are joined with a 0 byte between.
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch

from pibench.models.config import BYTE_VOCAB

VOCAB = BYTE_VOCAB  # tokens are bytes
VALIDATION_SHARE = 0.05
EVAL_SEED = 12345  # the validation windows: the same for every variant and seed (seeds differ in training alone)
SEPARATOR = b"\0"
SKIP = ("site-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__")


@dataclass(frozen=True)
class Corpus:
    train: torch.Tensor  # (n,) int64 byte values
    validation: torch.Tensor
    files: tuple[int, int]  # files in train, in validation
    root: str


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def in_validation(relative: str) -> bool:
    return hashlib.sha1(relative.encode()).digest()[0] < VALIDATION_SHARE * 256


def load_corpus(root: Path | None = None, max_bytes: int | None = None) -> Corpus:
    """The corpus under `root` (default: this interpreter's standard library), at most `max_bytes`
    of training text (validation keeps its share)."""
    root = root or stdlib_root()
    parts: dict[bool, list[bytes]] = {False: [], True: []}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if any(part in SKIP for part in rel.split("/")[:-1]) or not path.is_file():
            continue
        parts[in_validation(rel)].append(path.read_bytes())
    if not parts[False] or not parts[True]:
        raise ValueError(f"no Python sources to train on under {root}")
    train, val = (SEPARATOR.join(parts[k]) for k in (False, True))
    if max_bytes is not None:
        train, val = train[:max_bytes], val[: max(1, int(max_bytes * VALIDATION_SHARE))]
    return Corpus(_bytes(train), _bytes(val), (len(parts[False]), len(parts[True])), str(root))


def _bytes(text: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(text), dtype=torch.uint8).long()


def batch(tokens: torch.Tensor, T: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """`size` windows of T + 1 consecutive bytes at random offsets: (size, T + 1)."""
    starts = torch.randint(0, len(tokens) - T - 1, (size,), generator=gen)
    return torch.stack([tokens[s : s + T + 1] for s in starts.tolist()])
