"""The one error type for mistakes a user can make."""


class QnormError(ValueError):
    """A user-caused mistake (bad configuration, input or file), told in one sentence."""


def single_sample_message(module_name: str) -> str:
    """The sentence said when a batch-statistics norm is trained on one sample."""
    return (
        f"{module_name} in train mode got a batch of one sample, whose batch statistics are "
        "undefined; act through qnorm.acting_mode (eval mode) or train on at least 2 samples"
    )
