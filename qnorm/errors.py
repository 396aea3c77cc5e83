"""The one error type for mistakes a user can make."""


class QnormError(ValueError):
    """A user-caused mistake (bad configuration, input or file), told in one sentence."""
