"""Errors a user can act on: each names the offending file and what is wrong with it."""

from __future__ import annotations

import stat
from pathlib import Path


class SueloError(Exception):
    """Base of every error the CLI reports as one line (exit code 2) instead of a traceback."""


class InputError(SueloError):
    """An input file (image, metadata, archive, AOI, STAC document) is unusable."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(SueloError):
    """The job spec or a command-line option is invalid."""


class ModelFileError(InputError, ValueError):
    """A model/weights file that is missing, not ours, or not loadable weights-only.

    Also a ValueError, which is what the model loaders raised before, so existing callers keep working.
    """


def agreed(where: str | Path, said: dict[str, str], conflict: str) -> str | None:
    """The one value every statement in ``said`` (source -> value) makes, None when none makes any; statements
    that disagree are an InputError naming ``where``: ``conflict`` with ``{views}`` ("a says x, b says y")."""
    values = set(said.values())
    if len(values) > 1:
        views = ", ".join(f"{source} says {value}" for source, value in said.items())
        raise InputError(where, conflict.format(views=views))
    return values.pop() if values else None


def file_kind(mode: int) -> str:
    """What a non-regular file is, for messages ("a FIFO (named pipe)", "a character device", ...): a size guard
    means nothing for those (``/dev/zero`` has size 0 and never ends, a FIFO blocks), so readers refuse them."""
    for test, kind in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "a special file"
