"""User-facing errors: the CLI prints their message as one line and exits with code 2."""


class BenchError(Exception):
    """Bad input or an unmet precondition the user can fix (message says what and how)."""


class AuditError(BenchError):
    """An attack returned x_adv outside [0, 1] or outside its norm ball."""


class DiskError(BenchError):
    """A write failed because the disk is full or the folder is read-only: the run stops; records
    finished before are kept, and a rerun after freeing space continues."""
