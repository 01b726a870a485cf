"""Archive of every attested block's inputs, stored under their inputs hash.

The inputs (quantized spot, surface parameters, risk parameters, positions snapshot, block) are serialized with
:func:`keeper.codec.canonical.canonical_json` and stored as ``<dir>/<0x inputsHash>.json``; the file name is the
keccak-256 of the file's bytes, so anyone holding the file can check it and recompute every attested number.
"""
from __future__ import annotations

import os
import re
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Optional

from eth_utils import keccak

from keeper.codec.canonical import canonical_json

_HASH_RE = re.compile(r"^0x[0-9a-f]{64}$")


def normalize_hash(text: str) -> Optional[str]:
    """``0x`` + 64 lowercase hex digits, or ``None`` when ``text`` is not a 32-byte hash."""
    t = text.strip().lower()
    if not t.startswith("0x"):
        t = "0x" + t
    return t if _HASH_RE.match(t) else None


class InputsArchive:
    """A folder of canonical input files keyed by their keccak-256 hash, with a small in-memory cache.

    ``directory=None`` keeps everything in memory (tests, benchmarks).
    """

    def __init__(self, directory: Optional[Path], cache_size: int = 64) -> None:
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cache_size = cache_size
        self._memory_only = self.directory is None
        self._lock = threading.Lock()

    def put(self, inputs: Any) -> str:
        """Store ``inputs`` (anything canonical_json accepts); returns its ``0x`` inputs hash."""
        blob = canonical_json(inputs)
        return self.put_bytes(blob)

    def put_bytes(self, blob: bytes) -> str:
        """Store already-canonical bytes; returns their hash."""
        h = "0x" + keccak(blob).hex()
        with self._lock:
            self._remember(h, blob)
        if self.directory is not None:
            path = self.directory / f"{h}.json"
            if not path.exists():
                fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
                with os.fdopen(fd, "wb") as fh:
                    fh.write(blob)
                os.replace(tmp, path)
        return h

    def _remember(self, h: str, blob: bytes) -> None:
        self._cache[h] = blob
        self._cache.move_to_end(h)
        if not self._memory_only:
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def get(self, inputs_hash: str) -> Optional[bytes]:
        """The stored bytes for ``inputs_hash`` (checked against the hash), or ``None``."""
        h = normalize_hash(inputs_hash)
        if h is None:
            return None
        with self._lock:
            blob = self._cache.get(h)
        if blob is None and self.directory is not None:
            path = self.directory / f"{h}.json"
            try:
                blob = path.read_bytes()
            except OSError:
                return None
        if blob is None or "0x" + keccak(blob).hex() != h:
            return None
        return blob
