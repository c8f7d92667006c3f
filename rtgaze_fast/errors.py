"""Errors a user can cause (a missing file, bad weights, a photo with no face): the command line
prints them as one line with exit status 2, no traceback. Library code raises them; it never
imports the command line."""
from __future__ import annotations


class UserError(Exception):
    """A user error with a message that says what to do; ``rtgaze-fast`` prints it and exits 2."""
