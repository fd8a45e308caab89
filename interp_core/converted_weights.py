"""A checkpoint read in another precision one tensor at a time, so that loading in half precision never holds
the stored float32 weights whole.

transformers memory-maps a safetensors file and converts each tensor; every page it reads stays resident until
the file is closed, after the last tensor, so loading GPT-2 small's float32 file in bfloat16 peaked at the float32
weights plus the bfloat16 ones (724 MiB above the interpreter, for 237 MiB of weights). Reading each tensor with
plain reads, a chunk at a time, and converting each chunk at once peaks at the converted weights plus the
largest stored tensor.

    >>> state = converted_state_dict(folder, torch.bfloat16)   # None: nothing to convert, let transformers load
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import BinaryIO

import torch

INDEX = "model.safetensors.index.json"  # a sharded checkpoint's map from tensor name to file
SINGLE = "model.safetensors"
CHUNK_BYTES = 64 * 2**10  # read and converted at a time: below glibc's initial mmap threshold (128 KiB), so the
# chunks reuse one heap block; a freed mapped chunk would raise the threshold and leave the weights fragmenting it
STORED = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}  # safetensors' dtype names


def checkpoint_files(folder: Path) -> list[Path]:
    """The safetensors files of the checkpoint in `folder` (sharded or single; empty if there is none)."""
    index = folder / INDEX
    if index.is_file():
        return [folder / name for name in dict.fromkeys(json.loads(index.read_text())["weight_map"].values())]
    return [folder / SINGLE] if (folder / SINGLE).is_file() else []


def header(file: BinaryIO) -> tuple[dict, int]:
    """A safetensors file's header (tensor name -> dtype, shape, data_offsets) and where its data starts: the
    format is an 8-byte little-endian header length, the JSON header, then the tensors' bytes."""
    size = int.from_bytes(file.read(8), "little")
    entries = json.loads(file.read(size))
    entries.pop("__metadata__", None)
    return entries, 8 + size


def converted_state_dict(folder: Path, dtype: torch.dtype) -> dict[str, torch.Tensor] | None:
    """Every tensor of the checkpoint in `folder`, floating-point ones converted to `dtype`, read in chunks of
    CHUNK_BYTES (no memory map); None when the folder holds no safetensors checkpoint or it is stored in `dtype`
    already (transformers then maps the file itself, which costs nothing until a forward pass reads the weights)."""
    files = checkpoint_files(folder)
    headers = []
    for path in files:
        with path.open("rb") as file:
            headers.append(header(file))
    stored = {STORED[entry["dtype"]] for entries, _ in headers for entry in entries.values()}
    if not files or {d for d in stored if d.is_floating_point} <= {dtype}:
        return None
    state: dict[str, torch.Tensor] = {}
    for path, (entries, data_start) in zip(files, headers, strict=True):
        with path.open("rb") as file:
            for key, entry in entries.items():
                file.seek(data_start + entry["data_offsets"][0])
                state[key] = _read(file, STORED[entry["dtype"]], entry["shape"], dtype)
    return state


def _read(file: BinaryIO, stored: torch.dtype, shape: list[int], dtype: torch.dtype) -> torch.Tensor:
    """The tensor at the file's position, of `stored` dtype and `shape`, in `dtype` if it is floating-point."""
    out = torch.empty(shape, dtype=dtype if stored.is_floating_point else stored).reshape(-1)
    step = max(1, CHUNK_BYTES // stored.itemsize)
    for start in range(0, out.numel(), step):
        count = min(step, out.numel() - start)
        chunk = torch.empty(count, dtype=stored)
        file.readinto(memoryview(chunk.view(torch.uint8).numpy()))
        out[start:start + count] = chunk
    return out.reshape(shape)
