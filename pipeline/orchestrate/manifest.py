"""``<out>/manifest.jsonl``: a header with the plan digest, then one line per finished block with the checksums of
its files, appended and fsynced by the driver only. What a line claims is checked, not trusted, on every start."""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any

from suelo.atomic import atomic_output, file_sha256
from suelo.errors import ConfigError
from suelo.orchestrate.plan import BLOCKS, MANIFEST_VERSION, RunPlan

_BLOCK_NAME = re.compile(r"^r\d{6}_c\d{6}\.(tif|nc)$")  # Block.block_id + ".tif" / ".nc"


class Manifest:
    """The run's record of finished blocks (driver-only writes)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def finished(self, plan: RunPlan, overwrite: bool) -> dict[str, dict[str, Any]]:
        """Entries of blocks already done under this plan whose files still check out; starts a new manifest if none."""
        out_dir = self.path.parent
        lines = self._lines()
        if lines and lines[0].get("digest") != plan.digest:
            if not overwrite:
                raise ConfigError(
                    f"{self.path} belongs to a different job (spec, inputs or models changed); "
                    "use --overwrite to start over or choose another output.dir"
                )
            self._reset(plan)
            return {}
        if not lines:
            self._reset(plan)
            return {}
        # what a line claims is checked, not trusted: each file must have its checksum and read back as the block
        # raster it should be (an earlier version could record an empty file a full disk left); a block must also
        # have every file this plan needs (a job that now writes the cube needs the blocks' composites): blocks that
        # do not check out are redone
        expected = block_expectations(plan)
        needed = {block.block_id: {_relative(p, out_dir) for p in plan.block_paths(block).values()}
                  for block in plan.blocks()}  # fmt: skip
        done = {}
        for entry in lines[1:]:
            files = entry.get("files")
            block_id = entry.get("block")
            if entry.get("type") != "block" or not isinstance(files, dict) or not isinstance(block_id, str):
                continue
            if not needed.get(block_id, set()) <= set(files):
                continue
            if files and all(
                isinstance(sha, str) and file_matches(out_dir / name, sha, expected.get(name))
                for name, sha in files.items()
            ):
                done[block_id] = entry
        return done

    def append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, sort_keys=True) + "\n"
        with open(self.path, "ab+") as handle:
            # a line torn by a full disk must not swallow this one: start on a fresh line
            if handle.seek(0, os.SEEK_END) > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    line = "\n" + line
            handle.write(line.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())

    def _reset(self, plan: RunPlan) -> None:
        # only the block files suelo names (blocks/<role>/rNNNNNN_cNNNNNN.tif|.nc), never the folder wholesale
        blocks = self.path.parent / BLOCKS
        for path in sorted(blocks.glob("*/*")) if blocks.is_dir() else []:
            if _BLOCK_NAME.match(path.name) and path.is_file() and not path.is_symlink():
                path.unlink()
        for folder in sorted(blocks.glob("*")) if blocks.is_dir() else []:
            with contextlib.suppress(OSError):  # not empty: it holds something suelo did not write
                folder.rmdir()
        with contextlib.suppress(OSError):
            blocks.rmdir()
        header = {"type": "plan", "digest": plan.digest, "version": MANIFEST_VERSION, "blocks": len(plan.blocks())}
        with atomic_output(self.path) as tmp:
            tmp.write_text(json.dumps(header, sort_keys=True) + "\n", encoding="utf-8")

    def _lines(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        entries = []
        # errors="replace": whatever a full disk or a kill left in a torn line, the other lines still count
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line torn by a kill mid-write: that block is simply redone
            if isinstance(entry, dict):
                entries.append(entry)
        return entries


def _relative(path: Path, out_dir: Path) -> str:
    return str(path.relative_to(out_dir))


def block_expectations(plan: RunPlan) -> dict[str, dict[str, Any]]:
    """What each block raster of ``plan`` must be, by its path in the manifest: bands, dtype and shape."""
    expected = {}
    for block in plan.blocks():
        shape = (block.height, block.width)
        for product in plan.products:
            expected[f"{BLOCKS}/{product.name}/{block.block_id}.tif"] = dict(count=3, dtype=product.dtype, shape=shape)
        expected[f"{BLOCKS}/nclear/{block.block_id}.tif"] = dict(count=1, dtype="uint16", shape=shape)
    return expected


def file_matches(path: Path, sha256: str, expect: dict[str, Any] | None = None) -> bool:
    """``path`` has checksum ``sha256`` and, a raster, opens and reads in full (with ``expect``'s bands, dtype and
    shape when given); a block composite (NetCDF) is checked by its checksum."""
    from suelo.atomic import raster_readable

    try:
        if not path.is_file() or path.stat().st_size == 0 or file_sha256(path) != sha256:
            return False
    except OSError:
        return False
    return path.suffix != ".tif" or raster_readable(path, **(expect or {}))
