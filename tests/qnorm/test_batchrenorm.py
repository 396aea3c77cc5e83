"""Batch Renormalization: BatchNorm during warm-up, clipped corrections after, clear errors."""

import pytest
import torch
from torch.nn import functional as F

import qnorm
from qnorm.batchrenorm import BatchRenorm


def make(warmup=0, **kwargs):
    torch.manual_seed(0)
    norm = BatchRenorm(6, warmup_steps=warmup, **kwargs)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    return norm


def test_registered_as_a_batch_statistics_kind():
    kind = qnorm.get_norm_kind("batchrenorm")
    assert kind.uses_batch_statistics
    assert isinstance(qnorm.make_norm("batchrenorm", 4), BatchRenorm)


def test_equals_batchnorm_during_warmup():
    norm = make(warmup=10, unbiased_running_var=True)  # torch BatchNorm's running variance
    x = torch.randn(32, 6) * 2 + 1
    rm, rv = torch.zeros(6), torch.ones(6)
    for step in range(3):
        expected = F.batch_norm(
            x + step, rm, rv, norm.weight, norm.bias, True, norm.momentum, norm.eps
        )
        torch.testing.assert_close(norm(x + step), expected)
    torch.testing.assert_close(norm.running_mean, rm)
    torch.testing.assert_close(norm.running_var, rv)
    assert int(norm.num_batches_tracked) == 3


def test_running_variance_averages_the_biased_batch_variance_as_crossq_does():
    norm = make(warmup=10)
    x = torch.randn(32, 6) * 2 + 1
    norm(x)
    biased = x.var(dim=0, correction=0)
    torch.testing.assert_close(norm.running_var, torch.ones(6).lerp(biased, norm.momentum))
    unbiased = make(warmup=10, unbiased_running_var=True)
    unbiased(x)
    assert (unbiased.running_var > norm.running_var).all()


def test_over_leading_dims_uses_all_rows():
    norm = make(warmup=10)
    x = torch.randn(4, 5, 6)
    flat = make(warmup=10)
    torch.testing.assert_close(norm(x), flat(x.reshape(20, 6)).reshape(4, 5, 6))


def test_corrections_are_clipped_after_warmup():
    norm = make(warmup=0, rmax=2.0, dmax=1.5)
    with torch.no_grad():
        norm.running_mean.fill_(1000.0)  # far above the batch mean: d hits -dmax
        norm.running_var.fill_(1e4)  # running std 100, batch std ~1: r hits 1/rmax
    x = torch.randn(64, 6)
    var, mean = torch.var_mean(x, dim=0, correction=0)
    r, d = norm.correction(mean, torch.sqrt(var + norm.eps))
    torch.testing.assert_close(r, torch.full((6,), 0.5))
    torch.testing.assert_close(d, torch.full((6,), -1.5))
    expected = ((x - mean) / torch.sqrt(var + norm.eps) * 0.5 - 1.5) * norm.weight + norm.bias
    torch.testing.assert_close(norm(x), expected)


def test_unclipped_corrections_move_towards_running_statistics():
    norm = make(warmup=0)
    with torch.no_grad():
        norm.running_mean.fill_(0.2)
        norm.running_var.fill_(1.5)
    x = torch.randn(256, 6)
    var, mean = torch.var_mean(x, dim=0, correction=0)
    std = torch.sqrt(var + norm.eps)
    r, d = norm.correction(mean, std)
    running_std = torch.sqrt(norm.running_var + norm.eps)
    torch.testing.assert_close(r, std / running_std)
    torch.testing.assert_close(d, (mean - norm.running_mean) / running_std)


def test_no_gradient_flows_through_r_and_d():
    norm = make(warmup=0)
    with torch.no_grad():
        norm.running_mean.fill_(0.3)
        norm.running_var.fill_(2.0)
    x = torch.randn(16, 6, requires_grad=True)
    weights = torch.randn(16, 6)
    (norm(x) * weights).sum().backward()

    # The same expression with r and d computed apart as constants.
    x2 = x.detach().clone().requires_grad_(True)
    var, mean = torch.var_mean(x2, dim=0, correction=0)
    std = torch.sqrt(var + norm.eps)
    running_std = torch.sqrt(torch.full((6,), 2.0) + norm.eps)
    r = (std / running_std).clamp(1 / 3, 3).detach()
    d = ((mean - 0.3) / running_std).clamp(-5, 5).detach()
    y = ((x2 - mean) / std * r + d) * norm.weight.detach() + norm.bias.detach()
    (y * weights).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)


@pytest.mark.parametrize("shape", [(1, 6), (6,)])
def test_one_sample_in_train_mode_is_a_clear_error_not_nan(shape):
    norm = make(warmup=0)
    with pytest.raises(qnorm.QnormError, match="batch of one"):
        norm(torch.randn(*shape))


def test_eval_mode_uses_running_statistics_and_acts_on_one_state():
    norm = make(warmup=0)
    norm(torch.randn(32, 6) * 3)
    norm.eval()
    before = {k: v.clone() for k, v in norm.state_dict().items()}
    x = torch.randn(6)
    expected = (x - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps)
    torch.testing.assert_close(norm(x), expected * norm.weight + norm.bias)
    assert all(torch.equal(before[k], v) for k, v in norm.state_dict().items())


def test_step_counter_is_a_buffer_restored_by_state_dict():
    norm = make(warmup=3)
    for _ in range(5):
        norm(torch.randn(8, 6))
    state = norm.state_dict()
    assert int(state["num_batches_tracked"]) == 5
    fresh = make(warmup=3)
    fresh.load_state_dict(state)
    assert int(fresh.num_batches_tracked) == 5
    x = torch.randn(8, 6)
    torch.testing.assert_close(fresh(x), norm(x))  # both past warm-up: same correction


def test_bad_settings_are_a_clear_error():
    with pytest.raises(qnorm.QnormError):
        BatchRenorm(4, rmax=0.5)
