"""Errors a user can act on: they print as one clear message, never as a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or set-up; the CLI prints it and exits non-zero.

    ``file``, ``line`` and ``column`` say where, whenever that is known.
    """

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(str(self.file))
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.column:
            where.append(f"column {self.column!r}")
        text = f"{', '.join(where)}: {self.message}" if where else self.message
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class IngestError(UserError):
    """A source file cannot be read or mapped to the canonical schema."""


class DeliveryRejected(UserError):
    """A file-level validation check failed: the run stops, the previous run stays current."""

    exit_code = 3


class AlreadyProcessed(UserError):
    """The delivery is identical (by content hash) to one already processed: nothing to do."""

    exit_code = 0


class RunLocked(UserError):
    """Another run for the same data dir and entity is in progress."""

    exit_code = 4


class ConfigError(UserError):
    """belegwacht.toml or a mapping profile is invalid."""
