"""A local safetensors checkpoint read lazily: names, shapes and dtypes from the file headers,
one tensor's data at a time.

Loading copies each tensor straight into its parameter, so the peak is the model plus one
tensor, not the model plus the whole checkpoint (reading every tensor up front cost 2-4x the
model's size). A file that is not readable safetensors is a ValueError naming it.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2")   # safetensors' names


@dataclass(frozen=True)
class Entry:
    """One stored tensor: which file holds it, under which key, its shape and dtype name."""
    file: Path
    key: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def is_float(self) -> bool:
        return self.dtype in _FLOAT_DTYPES


def _unreadable(file: Path, exc: Exception) -> ValueError:
    return ValueError(f"{file}: not a readable safetensors file ({type(exc).__name__}: {exc}); "
                      "copy or download it again")


class Checkpoint(contextlib.AbstractContextManager):
    """The tensors of the checkpoint in `path` (model.safetensors, or the shards named by
    model.safetensors.index.json), by name; `load(name)` reads one on CPU. Use as a context
    manager: the files stay open until it exits."""

    def __init__(self, path: Path):
        from safetensors import safe_open
        self._stack = contextlib.ExitStack()
        self._handles: dict[Path, object] = {}
        self.entries: dict[str, Entry] = {}
        try:
            for file, names in self._files(path):
                try:
                    handle = self._handles[file] = self._stack.enter_context(safe_open(str(file), framework="pt"))
                    keys = list(handle.keys())
                    shapes = {k: handle.get_slice(k) for k in keys}
                    stored = {k: Entry(file, k, tuple(s.get_shape()), s.get_dtype()) for k, s in shapes.items()}
                except Exception as exc:  # noqa: BLE001 - safetensors' errors are its own classes
                    raise _unreadable(file, exc) from None
                self._add(stored, names)
            missing = sorted(set(self._weight_map or ()) - set(self.entries))
            if missing:
                raise ValueError(f"{INDEX} lists tensor {missing[0]!r} but no shard holds it")
        except BaseException:
            self._stack.close()
            raise

    def _files(self, path: Path):
        """(file, names the index puts in it, or None for a single file) for each file."""
        if (path / INDEX).is_file():
            try:
                weight_map = json.loads((path / INDEX).read_text())["weight_map"]
                shards = sorted(set(weight_map.values()))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
                raise ValueError(f"{path / INDEX} must be JSON with a 'weight_map' object: {e}") from None
            for shard in shards:
                if not (path / shard).is_file():
                    raise ValueError(f"{INDEX} names shard {shard!r}, which is not in {path}")
            self._weight_map = weight_map
            return [(path / shard, shard) for shard in shards]
        if (path / SINGLE).is_file():
            self._weight_map = None
            return [(path / SINGLE, None)]
        raise ValueError(f"no weights in {path}: expected {SINGLE} or {INDEX} (sharded)")

    def _add(self, stored: dict[str, Entry], shard) -> None:
        for name, entry in stored.items():
            if name in self.entries:
                raise ValueError(f"tensor {name!r} appears in more than one shard")
            if shard is not None and name not in self._weight_map:
                raise ValueError(f"{INDEX} does not list tensor {name!r}, which {shard} holds: the "
                                 "index is stale; regenerate it from the shards or download it again")
            if shard is not None and self._weight_map[name] != shard:
                raise ValueError(f"tensor {name!r} is in {shard} but {INDEX} puts it in "
                                 f"{self._weight_map[name]!r}; regenerate the index or download it again")
            self.entries[name] = entry

    def load(self, entry: Entry) -> torch.Tensor:
        """The stored tensor `entry` (one of `entries`' values), read now, on CPU."""
        try:
            return self._handles[entry.file].get_tensor(entry.key)
        except Exception as exc:  # noqa: BLE001 - a file truncated after its header
            raise _unreadable(entry.file, exc) from None

    def __exit__(self, *exc) -> None:
        self._stack.close()
