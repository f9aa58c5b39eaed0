"""User-facing errors: each becomes one line on stderr and a non-zero exit in cli.main()."""


class UserError(Exception):
    """Something the user can fix (input, permissions, machine set-up)."""

    exit_status = 2
