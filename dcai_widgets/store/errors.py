"""Errors a label store raises, each worded for the person at the keyboard (what happened, what to do).

They subclass the built-in errors callers already catch (ValueError, TimeoutError, OSError) so older
code keeps working, and never suggest giving up a store whose labels can still be recovered.
"""
from __future__ import annotations


class StoreMismatchError(ValueError):
    """The store file was made for another dataset (different items or classes)."""


class ClaimLostError(ValueError):
    """A label was written for an item whose claim another annotator holds now; nothing was written."""


class NotAStoreError(ValueError):
    """The path holds something that is not a dcai-widgets label store (the file was not changed)."""


class StoreDamagedError(ValueError):
    """The store file is damaged; its labels may be recoverable, so it must not be deleted."""


class StoreVersionError(ValueError):
    """The store was written by a newer dcai-widgets than this one."""


class StoreBusyError(TimeoutError):
    """Another writer held the store longer than this process is willing to wait."""


class StoreFullError(OSError):
    """The disk (or the database's size limit) is full: the label was not saved."""


class StoreReadOnlyError(PermissionError):
    """The store can be read but not written: labels cannot be saved."""


class StoreUnavailableError(ConnectionError):
    """The database server could not be reached within the retry budget."""


def damaged_message(where: str, said: object) -> str:
    return (f"label store {where}: the file is damaged (SQLite said: {said}); your labels may be recoverable "
            f"with `dcai-widgets backup {where} copy.db` (it says how) or `sqlite3 {where} .recover` / `.dump`; "
            "do not delete it")


def read_only_message(where: str, why: object = "", database: bool = False) -> str:
    why = str(why).strip().splitlines()[0] if str(why).strip() else ""
    tail = f" ({why})" if why else ""
    fix = ("Ask for write access to its tables" if database else "Make the file and its folder writable")
    return (f"label store {where} is read-only{tail}: labels cannot be saved; reading them still works. "
            f"{fix}, or copy it to a writable place (`dcai-widgets backup {where} NEW.db`) and open the copy")


def full_message(where: str, said: object) -> str:
    return (f"label store {where}: the disk is full (SQLite said: {said}); the label was NOT saved. "
            "Free some space and press the key again; the labels already saved are intact")


def busy_message(where: str, waited: float) -> str:
    return (f"label store {where} stayed locked by another writer for {waited:.1f} s; the label was NOT saved. "
            "Try again; if this repeats, another program is holding the store open in a write transaction")
