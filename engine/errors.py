"""Typed errors, each carrying its exit code from SPEC §7."""

from __future__ import annotations


class JukiError(Exception):
    """Base of every error juki reports as one line and an exit code."""

    exit_code = 1


class UsageError(JukiError):
    """Bad option or a named file that does not exist (exit 2)."""

    exit_code = 2

    @classmethod
    def missing_file(cls, path: object) -> UsageError:
        return cls(f"{path}: no such file")


class AccessRefused(JukiError):
    """Unknown agency or affair, function or column not allowed (exit 3)."""

    exit_code = 3


class InputRejected(JukiError):
    """A file that cannot be read as its format requires or lacks required columns (exit 4)."""

    exit_code = 4

    @classmethod
    def unreadable(cls, path: object, cause: str) -> InputRejected:
        return cls(f"{path}: {cause}")


class StoreUnavailable(JukiError):
    """Store locked by another writer, corrupt or missing (exit 5)."""

    exit_code = 5

    @classmethod
    def locked(cls, store: object, holder: str) -> StoreUnavailable:
        return cls(f"{store}: store is locked by another writer ({holder}); try again when it ends")
