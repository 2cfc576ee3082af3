"""User-facing errors: the CLI prints their message as one line and exits with code 2."""

import re

#: ``scheme://user:password@``: the password part of a URI's userinfo (a tracking store's login).
_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]*):[^\s@]+@")


def mask_secrets(text: str) -> str:
    """``postgresql://u:secret@h/db`` -> ``postgresql://u:***@h/db``, wherever a URI appears in ``text``."""
    return _USERINFO.sub(r"\1:***@", text)


class BenchError(Exception):
    """Bad input or an unmet precondition the user can fix (message says what and how). The message
    is kept to one line: a newline or other control character that came from user input (a TOML key
    named "\\n") is shown escaped, as Python writes it in a string literal; a password in a URI
    (``http://user:secret@host``) is masked."""

    def __init__(self, message: object = "", *args: object) -> None:
        text = mask_secrets(str(message))
        if any(c < " " or c == "\x7f" for c in text):
            text = "".join(c.encode("unicode_escape").decode() if c < " " or c == "\x7f" else c for c in text)
        super().__init__(text, *args)


class AuditError(BenchError):
    """An attack returned x_adv outside [0, 1] or outside its norm ball."""


class DiskError(BenchError):
    """A write failed because the disk is full or the folder is read-only: the run stops; records
    finished before are kept, and a rerun after freeing space continues."""
