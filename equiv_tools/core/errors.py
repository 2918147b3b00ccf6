"""The kit's one exception type for bad input."""


class InputError(ValueError):
    """Raised for input the kit cannot use; the message says what is wrong and what to do."""
