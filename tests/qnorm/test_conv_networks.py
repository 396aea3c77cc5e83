"""Conv Q-networks: the spec, the presets, every norm kind on feature maps, the mode rules."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from net_state import assert_same_state, modes, registered, snapshot
from torch import nn

import qnorm

OBS_SHAPE, NUM_ACTIONS, GROUPS = (3, 12, 12), 4, 2
# 12x12 -> conv 3 -> 10x10 -> pool 2 -> 5x5 -> conv 2 -> 4x4: a pool, and two convs.
SMALL = {"channels": (4, 8), "kernels": (3, 2), "strides": (1, 1), "pools": (2, 0)}
HIDDEN = (8,)
NORMS = qnorm.norm_names()
BATCH_STAT_NORMS = tuple(n for n in NORMS if qnorm.get_norm_kind(n).uses_batch_statistics)
PER_SAMPLE_NORMS = tuple(n for n in NORMS if n != "none" and n not in BATCH_STAT_NORMS)
BLOCK_ORDERS = {
    ("before", False): ["conv", "conv_norm", "conv_act", "pool"],
    ("before", True): ["conv", "pool", "conv_norm", "conv_act"],
    ("after", False): ["conv", "conv_act", "conv_norm", "pool"],
    ("after", True): ["conv", "conv_act", "pool", "conv_norm"],
}


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(1)


def make_spec(norm="none", **kw):
    base = {
        "obs_shape": OBS_SHAPE,
        "num_actions": NUM_ACTIONS,
        "hidden_sizes": HIDDEN,
        "norm": norm,
        "norm_groups": GROUPS,
        **SMALL,
    }
    return qnorm.ConvQNetworkSpec(**{**base, **kw})


def build(norm="none", seed=0, **kw):
    torch.manual_seed(seed)
    return qnorm.build_q_network(make_spec(norm, **kw))


def images(n, shape=OBS_SHAPE, seed=1):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed)) * 2.0 + 1.0


def warm_up(net, steps=3, batch=8):
    """A few train-mode forwards so running statistics are not their initial values."""
    with qnorm.learning_mode(net), torch.no_grad():
        for step in range(steps):
            net(images(batch, net.spec.obs_shape, seed=10 + step))


def eval_forward(net, x):
    with qnorm.eval_mode(net), torch.no_grad():
        return net(x)


# --- the spec -------------------------------------------------------------------------------


SPEC_VARIANTS = [
    {},
    {"norm": "batchnorm", "placement": "after", "norm_after_pool": True, "dueling": True},
    {"norm": "groupnorm", "norm_target": "torso", "norm_groups": 4, "hidden_sizes": ()},
    {"obs_shape": (12, 12, 3), "channels_last": True, "obs_scale": 1 / 255, "activation": "tanh"},
]


@pytest.mark.parametrize("variant", SPEC_VARIANTS)
def test_spec_round_trips_exactly_through_json(variant):
    spec = make_spec(**variant)
    data = spec.to_dict()
    assert data["kind"] == "conv"
    restored = qnorm.ConvQNetworkSpec.from_dict(json.loads(json.dumps(data)))
    assert restored == spec
    assert qnorm.spec_from_dict(json.loads(json.dumps(data))) == spec
    assert isinstance(restored.channels, tuple) and isinstance(restored.obs_shape, tuple)


def test_spec_fields_and_defaults_are_the_plans():
    spec = qnorm.ConvQNetworkSpec((4, 84, 84), 6)
    assert (spec.channels, spec.kernels, spec.strides) == ((32, 64, 64), (8, 4, 3), (4, 2, 1))
    assert spec.pools == (0, 0, 0) and spec.hidden_sizes == (512,)
    assert (spec.activation, spec.norm, spec.placement) == ("relu", "none", "before")
    assert (spec.norm_after_pool, spec.norm_target, spec.norm_groups) == (False, "both", 8)
    assert (spec.channels_last, spec.obs_scale, spec.dueling) == (False, 1.0, False)
    assert set(spec.to_dict()) == {"kind", *(f.name for f in dataclasses.fields(spec))}


def test_spec_lists_become_tuples():
    spec = make_spec(obs_shape=[3, 12, 12], channels=[4, 8], hidden_sizes=[8])
    assert spec.obs_shape == OBS_SHAPE and spec.channels == (4, 8) and spec.hidden_sizes == (8,)
    assert spec == make_spec()


def test_mlp_and_conv_specs_dispatch_on_kind():
    mlp = qnorm.QNetworkSpec(4, 2, (8,), norm="groupnorm", norm_groups=4)
    data = mlp.to_dict()
    assert data["kind"] == "mlp"
    assert qnorm.spec_from_dict(data) == mlp
    assert qnorm.QNetworkSpec.from_dict(data) == mlp
    del data["kind"]  # a checkpoint from before conv networks
    assert qnorm.spec_from_dict(data) == mlp
    assert qnorm.QNetworkSpec.from_dict(data) == mlp
    data.pop("norm_groups")  # and from before norm_groups
    assert qnorm.spec_from_dict(data) == qnorm.QNetworkSpec(4, 2, (8,), norm="groupnorm")

    conv = make_spec("batchnorm")
    with pytest.raises(qnorm.QnormError, match="'conv'"):
        qnorm.QNetworkSpec.from_dict(conv.to_dict())
    with pytest.raises(qnorm.QnormError, match="'mlp'"):
        qnorm.ConvQNetworkSpec.from_dict(mlp.to_dict())
    with pytest.raises(qnorm.QnormError, match="unknown network kind 'rnn'"):
        qnorm.spec_from_dict({**conv.to_dict(), "kind": "rnn"})
    with pytest.raises(qnorm.QnormError, match="JSON object"):
        qnorm.spec_from_dict([1, 2])
    assert isinstance(
        qnorm.build_q_network(qnorm.spec_from_dict(conv.to_dict())), qnorm.ConvQNetwork
    )
    assert isinstance(qnorm.build_q_network(mlp), qnorm.QNetwork)
    with pytest.raises(TypeError):
        qnorm.build_q_network(conv.to_dict())


def test_spec_from_dict_rejects_unknown_fields():
    data = make_spec().to_dict()
    data["filters"] = [4]
    with pytest.raises(qnorm.QnormError, match="filters"):
        qnorm.spec_from_dict(data)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"obs_shape": (12, 12)}, "3 positive sizes"),
        ({"obs_shape": (0, 12, 12)}, "3 positive sizes"),
        ({"num_actions": 0}, "actions"),
        ({"hidden_sizes": (8, 0)}, "hidden"),
        ({"kernels": (3,)}, "one entry per conv layer"),
        ({"channels": (), "kernels": (), "strides": (), "pools": ()}, "at least one"),
        ({"strides": (0, 1)}, ">= 1"),
        ({"pools": (-1, 0)}, "pools >= 0"),
        ({"kernels": (13, 2)}, "shrinks to nothing at conv layer 1"),
        ({"pools": (2, 5)}, "shrinks to nothing at conv layer 2"),
        ({"norm_target": "all"}, "norm_target"),
        ({"placement": "middle"}, "placement"),
        ({"activation": "swish"}, "activation"),
        ({"norm": "groupnrom"}, "unknown norm"),
        ({"obs_scale": 0.0}, "obs_scale"),
        ({"obs_scale": float("nan")}, "obs_scale"),
        ({"norm_groups": 0}, "norm_groups"),
        ({"norm": "groupnorm", "norm_groups": 3}, "3 groups"),
        ({"norm": "groupnorm", "hidden_sizes": (6,), "norm_groups": 4}, "width of 6"),
    ],
)
def test_bad_spec_is_a_qnorm_error(kwargs, match):
    with pytest.raises(qnorm.QnormError, match=match):
        make_spec(**kwargs)


def test_group_count_only_has_to_divide_the_normalized_widths():
    make_spec("groupnorm", norm_target="torso", hidden_sizes=(6,), norm_groups=4)
    make_spec("groupnorm", norm_target="head", channels=(6, 6), hidden_sizes=(8,), norm_groups=4)
    make_spec("layernorm", hidden_sizes=(7,), norm_groups=3)  # no groups: the count is unused


# --- presets --------------------------------------------------------------------------------


def test_presets_are_the_papers_networks():
    nature = qnorm.conv_preset("nature")
    assert nature == {
        "channels": (32, 64, 64),
        "kernels": (8, 4, 3),
        "strides": (4, 2, 1),
        "pools": (0, 0, 0),
        "hidden_sizes": (512,),
    }
    minatar = qnorm.conv_preset("minatar")
    assert (minatar["channels"], minatar["kernels"], minatar["strides"]) == ((16,), (3,), (1,))
    assert minatar["hidden_sizes"] == (128,)
    assert set(qnorm.CONV_PRESETS) == {"nature", "minatar"}


def test_a_preset_is_a_copy():
    preset = qnorm.conv_preset("nature")
    preset["hidden_sizes"] = (1,)
    assert qnorm.CONV_PRESETS["nature"]["hidden_sizes"] == (512,)


def test_unknown_preset_is_a_qnorm_error_naming_the_known_ones():
    with pytest.raises(qnorm.QnormError, match=r"'natur'.*nature, minatar"):
        qnorm.conv_preset("natur")


def test_nature_preset_on_atari_frames():
    spec = qnorm.ConvQNetworkSpec((4, 84, 84), 6, obs_scale=1 / 255, **qnorm.conv_preset("nature"))
    assert spec.torso_output_shape() == (64, 7, 7)
    net = qnorm.build_q_network(spec)
    assert net.layers.linear1.in_features == 64 * 7 * 7
    frames = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    assert eval_forward(net, frames).shape == (2, 6)


def test_minatar_preset_on_channels_last_bool_grids():
    spec = qnorm.ConvQNetworkSpec(
        (10, 10, 4), 3, channels_last=True, norm="batchnorm", **qnorm.conv_preset("minatar")
    )
    assert spec.in_channels == 4
    assert spec.torso_output_shape() == (16, 8, 8)
    net = qnorm.build_q_network(spec)
    assert net.layers.conv1.in_channels == 4
    assert net.layers.linear1.in_features == 16 * 8 * 8
    grid = np.random.default_rng(0).random((10, 10, 4)) < 0.3
    assert 0 <= qnorm.greedy_action(net, grid) < 3


# --- layout: order, names, biases, targets --------------------------------------------------


def expected_names(spec):
    names = []
    for i, pool in enumerate(spec.pools, start=1):
        for part in BLOCK_ORDERS[(spec.placement, spec.norm_after_pool)]:
            if (part == "conv_norm" and not spec.normalizes("torso")) or (
                part == "pool" and not pool
            ):
                continue
            names.append(f"{part}{i}")
    names.append("flatten")
    for i in range(1, len(spec.hidden_sizes) + 1):
        block = (
            ["linear", "norm", "act"] if spec.placement == "before" else ["linear", "act", "norm"]
        )
        names += [f"{part}{i}" for part in block if part != "norm" or spec.normalizes("head")]
    return [*names, *([] if spec.dueling else ["q_head"])]


@pytest.mark.parametrize("dueling", [False, True])
@pytest.mark.parametrize("norm_target", qnorm.NORM_TARGETS)
@pytest.mark.parametrize("norm_after_pool", [False, True])
@pytest.mark.parametrize("placement", qnorm.PLACEMENTS)
@pytest.mark.parametrize("norm", NORMS)
def test_layers_come_in_placement_order(norm, placement, norm_after_pool, norm_target, dueling):
    net = build(
        norm,
        placement=placement,
        norm_after_pool=norm_after_pool,
        norm_target=norm_target,
        dueling=dueling,
    )
    names = [name for name, _ in net.layers.named_children()]
    assert names == expected_names(net.spec)
    norms = [n for n in names if "norm" in n]
    torso = norm != "none" and norm_target != "head"
    head = norm != "none" and norm_target != "torso"
    assert [n for n in norms if n.startswith("conv_norm")] == (
        ["conv_norm1", "conv_norm2"] if torso else []
    )
    assert [n for n in norms if n.startswith("norm")] == (["norm1"] if head else [])
    assert isinstance(net.layers.pool1, nn.MaxPool2d) and net.layers.pool1.kernel_size == 2
    assert isinstance(net.layers.flatten, nn.Flatten)
    assert (net.head is not None) is dueling
    if torso:
        assert isinstance(
            net.layers.conv_norm1, type(qnorm.make_norm(norm, 4, feature_maps=True, groups=GROUPS))
        )
        assert net.layers.conv_norm2.weight.shape == (8,)


def reaches_batch_norm_before_activation(children, i):
    """Whether the output of layer ``i`` meets a batch-statistics norm before anything but pools."""
    for _, module in children[i + 1 :]:
        if qnorm.is_batch_statistics_module(module):
            return True
        if not isinstance(module, nn.MaxPool2d):
            return False
    return False


@pytest.mark.parametrize("norm_target", qnorm.NORM_TARGETS)
@pytest.mark.parametrize("norm_after_pool", [False, True])
@pytest.mark.parametrize("placement", qnorm.PLACEMENTS)
@pytest.mark.parametrize("norm", NORMS)
def test_conv_or_linear_before_a_batch_statistics_norm_has_no_bias(
    norm, placement, norm_after_pool, norm_target
):
    net = build(norm, placement=placement, norm_after_pool=norm_after_pool, norm_target=norm_target)
    children = list(net.layers.named_children())
    for i, (name, module) in enumerate(children):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            assert (module.bias is None) is reaches_batch_norm_before_activation(children, i), name
    no_bias = norm in BATCH_STAT_NORMS and placement == "before"
    assert (net.layers.conv1.bias is None) is (no_bias and norm_target != "head")
    assert (net.layers.conv2.bias is None) is (no_bias and norm_target != "head")
    assert (net.layers.linear1.bias is None) is (no_bias and norm_target != "torso")
    assert net.layers.q_head.bias is not None


def plain_layernorm(num_features):
    return nn.LayerNorm(num_features, elementwise_affine=False)


def test_a_kind_without_a_map_form_can_still_normalize_the_head():
    with registered("rownorm", plain_layernorm):
        for target in ("torso", "both"):
            with pytest.raises(qnorm.QnormError, match="'rownorm' has no form for feature maps"):
                make_spec("rownorm", norm_target=target)
        net = build("rownorm", norm_target="head")
    assert isinstance(net.layers.norm1, nn.LayerNorm)
    assert not any(name.startswith("conv_norm") for name, _ in net.layers.named_children())


def test_a_registered_map_form_goes_into_the_torso():
    with registered("mapnorm", plain_layernorm, map_factory=lambda c: nn.GroupNorm(1, c)):
        net = build("mapnorm", placement="after")
    assert isinstance(net.layers.conv_norm1, nn.GroupNorm)
    assert net.layers.conv_norm2.num_channels == 8
    assert isinstance(net.layers.norm1, nn.LayerNorm)
    assert eval_forward(net, images(2)).shape == (2, NUM_ACTIONS)


# --- every kind on feature maps -------------------------------------------------------------


@pytest.mark.parametrize("dueling", [False, True])
@pytest.mark.parametrize("norm_after_pool", [False, True])
@pytest.mark.parametrize("placement", qnorm.PLACEMENTS)
@pytest.mark.parametrize("norm", NORMS)
def test_every_kind_trains_and_acts_on_images(norm, placement, norm_after_pool, dueling):
    net = build(norm, placement=placement, norm_after_pool=norm_after_pool, dueling=dueling)
    x = images(6)
    with qnorm.learning_mode(net):
        out = net(x)
    assert out.shape == (6, NUM_ACTIONS)
    out.sum().backward()
    assert net.layers.conv1.weight.grad is not None
    assert torch.isfinite(net.layers.conv1.weight.grad).all()

    warm_up(net)
    net.train()  # the dangerous case: the caller left the network in train mode
    before, before_modes = snapshot(net), modes(net)
    obs = images(1, seed=7)[0].numpy()
    action = qnorm.greedy_action(net, obs)
    values = qnorm.q_values(net, obs)
    actions = qnorm.greedy_action(net, obs[None].repeat(3, axis=0))
    assert type(action) is int and 0 <= action < NUM_ACTIONS
    assert values.shape == (NUM_ACTIONS,)
    assert action == int(values.argmax())
    assert actions.dtype == np.int64 and actions.tolist() == [action] * 3
    assert_same_state(before, net)
    assert modes(net) == before_modes
    torch.testing.assert_close(values, eval_forward(net, torch.as_tensor(obs)[None])[0])
    # Eval mode: each image is computed on its own, whatever else is in the batch.
    batch = images(5, seed=8)
    rows = torch.cat([eval_forward(net, batch[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(eval_forward(net, batch), rows, atol=1e-5, rtol=1e-5)
    assert_same_state(before, net)


@pytest.mark.parametrize("placement", qnorm.PLACEMENTS)
@pytest.mark.parametrize("norm", BATCH_STAT_NORMS)
def test_training_batch_statistics_kinds_on_one_image_is_a_clear_error(norm, placement):
    for target in ("torso", "both"):
        net = build(norm, placement=placement, norm_target=target)
        before = snapshot(net)
        with pytest.raises(qnorm.QnormError, match="batch of one"), qnorm.learning_mode(net):
            net(images(1))
        with pytest.raises(qnorm.QnormError, match="batch of one"), qnorm.learning_mode(net):
            net(images(1)[0])  # unbatched
        assert_same_state(before, net)
        with pytest.raises(qnorm.QnormError, match="batch size 1"):
            qnorm.check_train_batch_size(net, 1)
        qnorm.check_train_batch_size(net, 2)


@pytest.mark.parametrize("norm", PER_SAMPLE_NORMS)
def test_per_sample_kinds_train_on_one_image(norm):
    net = build(norm)
    assert not qnorm.has_batch_statistics(net)
    qnorm.check_train_batch_size(net, 1)
    with qnorm.learning_mode(net):
        assert net(images(1)).shape == (1, NUM_ACTIONS)


@pytest.mark.parametrize("norm", NORMS)
def test_leading_dims_are_samples(norm):
    net = build(norm)
    warm_up(net)
    seq = images(6).reshape(2, 3, *OBS_SHAPE)
    out = eval_forward(net, seq)
    assert out.shape == (2, 3, NUM_ACTIONS)
    torch.testing.assert_close(
        out.reshape(6, NUM_ACTIONS), eval_forward(net, seq.reshape(6, *OBS_SHAPE))
    )
    with qnorm.acting_mode(net):
        assert net(seq[0, 0]).shape == (NUM_ACTIONS,)


@pytest.mark.parametrize("shape", [(12, 12, 3), (3, 12), (3, 12, 11), (2, 2, 3, 12, 12)])
def test_acting_on_an_observation_of_the_wrong_shape_is_a_qnorm_error(shape):
    net = build("batchnorm")
    before = snapshot(net)
    with pytest.raises(qnorm.QnormError):
        qnorm.greedy_action(net, np.zeros(shape, dtype=np.float32))
    assert_same_state(before, net)


@pytest.mark.parametrize("shape", [(12, 12, 3), (3, 12), (4, 3, 12, 11)])
def test_forward_on_images_of_the_wrong_shape_is_a_qnorm_error(shape):
    net = build("batchnorm")
    with pytest.raises(qnorm.QnormError, match=r"\(3, 12, 12\)"), qnorm.acting_mode(net):
        net(torch.zeros(shape))


# --- inputs: channels-last, bool and uint8 --------------------------------------------------


@pytest.mark.parametrize("norm", NORMS)
def test_channels_last_bool_grids_equal_channels_first_floats(norm):
    first = build(norm, seed=3)
    last = build(norm, seed=3, obs_shape=(12, 12, 3), channels_last=True)
    for a, b in zip(first.parameters(), last.parameters(), strict=True):
        assert torch.equal(a, b)  # same sizes, same seed: the same weights
    grids = torch.rand(8, 12, 12, 3, generator=torch.Generator().manual_seed(2)) < 0.4
    as_floats = grids.permute(0, 3, 1, 2).to(torch.float32)
    with qnorm.learning_mode(first), qnorm.learning_mode(last):
        torch.testing.assert_close(last(grids), first(as_floats))
    torch.testing.assert_close(eval_forward(last, grids), eval_forward(first, as_floats))
    grid = grids[0].numpy()
    assert grid.dtype == np.bool_
    torch.testing.assert_close(qnorm.q_values(last, grid), qnorm.q_values(first, as_floats[0]))


@pytest.mark.parametrize("norm", ["none", "batchnorm"])
def test_uint8_frames_are_scaled_inside_the_network(norm):
    scaled = build(norm, seed=4, obs_scale=1 / 255)
    plain = build(norm, seed=4)
    frames = torch.randint(0, 256, (6, *OBS_SHAPE), dtype=torch.uint8)
    expected = frames.to(torch.float32) * (1 / 255)
    with qnorm.learning_mode(scaled), qnorm.learning_mode(plain):
        torch.testing.assert_close(scaled(frames), plain(expected))
    torch.testing.assert_close(eval_forward(scaled, frames), eval_forward(plain, expected))
    before = snapshot(scaled)
    values = qnorm.q_values(scaled, frames[0].numpy())
    torch.testing.assert_close(values, eval_forward(plain, expected[:1])[0])
    assert qnorm.greedy_action(scaled, frames[0].numpy()) == int(values.argmax())
    assert_same_state(before, scaled)
    # The scale is not applied twice to float input, and float64 becomes float32.
    torch.testing.assert_close(
        eval_forward(scaled, frames.to(torch.float64)), eval_forward(scaled, frames)
    )


# --- state dict -----------------------------------------------------------------------------


@pytest.mark.parametrize("dueling", [False, True])
@pytest.mark.parametrize("norm", NORMS)
def test_state_dict_round_trip_through_a_json_spec(norm, dueling):
    spec = make_spec(norm, placement="after", dueling=dueling)
    net = build(norm, placement="after", dueling=dueling)
    warm_up(net)
    restored = qnorm.build_q_network(qnorm.spec_from_dict(json.loads(json.dumps(spec.to_dict()))))
    restored.load_state_dict(net.state_dict())
    x = images(4)
    assert torch.equal(eval_forward(restored, x), eval_forward(net, x))
    if norm in BATCH_STAT_NORMS:
        assert int(restored.layers.conv_norm1.num_batches_tracked) == 3
        assert not torch.equal(restored.layers.conv_norm1.running_mean, torch.zeros(4))
