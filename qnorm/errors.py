"""The one error type for mistakes a user can make."""


class QnormError(ValueError):
    """A user-caused mistake (bad configuration, input or file), told in one sentence."""


def single_sample_message(module_name: str) -> str:
    """The sentence said when a batch-statistics norm is trained on one sample."""
    return (
        f"{module_name} in train mode got a batch of one sample, whose batch statistics are "
        "undefined; act through qnorm.acting_mode (eval mode) or train on at least 2 samples"
    )


def check_groups(num_features: int, groups: int) -> None:
    """Raise a QnormError unless ``groups`` splits ``num_features`` into equal groups."""
    if groups < 1 or num_features % groups:
        raise QnormError(
            f"a group norm with {groups} groups cannot split a width of {num_features} into "
            "equal groups; choose norm_groups that divides every normalized width"
        )
