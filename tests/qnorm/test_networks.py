"""Q-networks built from a spec: layer layout, biases, names, and the state_dict round trip."""

import json

import pytest
import torch
from torch import nn

import qnorm
from qnorm.batchrenorm import BatchRenorm

OBS_DIM, NUM_ACTIONS, HIDDEN = 6, 3, (16, 8)
GROUPS = 2  # divides OBS_DIM and HIDDEN, so groupnorm also fits the input norm
NORMS = qnorm.norm_names()


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(1)


def make_spec(norm="none", placement="before", input_norm=False, dueling=False, **kw):
    return qnorm.QNetworkSpec(
        OBS_DIM,
        NUM_ACTIONS,
        HIDDEN,
        norm=norm,
        placement=placement,
        input_norm=input_norm,
        dueling=dueling,
        **{"norm_groups": GROUPS, **kw},
    )


def build(spec, seed=0):
    torch.manual_seed(seed)
    return qnorm.build_q_network(spec)


def train_a_little(net):
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    with qnorm.learning_mode(net):
        for _ in range(3):
            loss = net(torch.randn(32, OBS_DIM) * 2.0 + 1.0).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


# --- 7. state_dict round trip through a JSON spec -------------------------------------------


@pytest.mark.parametrize("dueling", [False, True])
@pytest.mark.parametrize("input_norm", [False, True])
@pytest.mark.parametrize("placement", qnorm.PLACEMENTS)
@pytest.mark.parametrize("norm", NORMS)
def test_state_dict_round_trip_through_a_json_spec(norm, placement, input_norm, dueling):
    spec = make_spec(norm, placement, input_norm, dueling, activation="tanh")
    net = build(spec, seed=0)
    train_a_little(net)

    text = json.dumps(spec.to_dict())
    restored_spec = qnorm.QNetworkSpec.from_dict(json.loads(text))
    assert restored_spec == spec
    assert restored_spec.hidden_sizes == HIDDEN
    restored = build(restored_spec, seed=1)
    restored.load_state_dict(net.state_dict())

    x = torch.randn(16, OBS_DIM) * 2.0 + 1.0
    with qnorm.eval_mode(net), qnorm.eval_mode(restored), torch.no_grad():
        assert torch.equal(net(x), restored(x))
    assert list(restored.state_dict()) == list(net.state_dict())
    if norm == "batchnorm":
        assert int(restored.layers.norm1.num_batches_tracked) == 3


def test_spec_dict_names_its_kind_and_older_dicts_still_load():
    spec = make_spec("groupnorm", norm_groups=4)
    data = spec.to_dict()
    assert data["kind"] == "mlp" and data["norm_groups"] == 4
    assert qnorm.QNetworkSpec.from_dict(data) == spec
    old = {k: v for k, v in data.items() if k not in ("kind", "norm_groups")}
    assert qnorm.QNetworkSpec.from_dict(old) == make_spec("groupnorm", norm_groups=8)
    with pytest.raises(qnorm.QnormError, match="kind 'conv'"):
        qnorm.QNetworkSpec.from_dict({**data, "kind": "conv"})


def test_spec_from_dict_rejects_unknown_fields():
    data = make_spec().to_dict()
    data["hidden"] = [4]
    with pytest.raises(qnorm.QnormError, match="hidden"):
        qnorm.QNetworkSpec.from_dict(data)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"activation": "swish"},
        {"placement": "middle"},
        {"hidden_sizes": (16, 0)},
        {"obs_dim": 0},
        {"num_actions": 0},
        {"norm_groups": 0},
        {"norm": "groupnorm", "norm_groups": 5},
        {"norm": "groupnorm", "norm_groups": 4, "input_norm": True, "obs_dim": 6},
    ],
)
def test_bad_spec_is_a_qnorm_error(kwargs):
    base = {"obs_dim": OBS_DIM, "num_actions": NUM_ACTIONS}
    with pytest.raises(qnorm.QnormError):
        qnorm.QNetworkSpec(**{**base, **kwargs})


# --- 8. layout: biases and readable names ---------------------------------------------------


@pytest.mark.parametrize("dueling", [False, True])
@pytest.mark.parametrize("input_norm", [False, True])
@pytest.mark.parametrize("placement", qnorm.PLACEMENTS)
@pytest.mark.parametrize("norm", NORMS)
def test_linear_directly_before_batchnorm_has_no_bias(norm, placement, input_norm, dueling):
    net = build(make_spec(norm, placement, input_norm, dueling))
    children = list(net.layers.named_children())
    checked = 0
    for (name, module), (_, following) in zip(children, [*children[1:], (None, None)], strict=True):
        if not isinstance(module, nn.Linear):
            continue
        checked += 1
        if following is not None and qnorm.is_batch_statistics_module(following):
            assert module.bias is None, name
        else:
            assert module.bias is not None, name
    assert checked == len(HIDDEN) + (0 if dueling else 1)
    no_bias = qnorm.get_norm_kind(norm).uses_batch_statistics and placement == "before"
    for i in range(1, len(HIDDEN) + 1):
        assert (getattr(net.layers, f"linear{i}").bias is None) is no_bias
    if dueling:
        assert net.head.value.bias is not None
        assert net.head.advantage.bias is not None
    else:
        assert net.layers.q_head.bias is not None


@pytest.mark.parametrize("dueling", [False, True])
@pytest.mark.parametrize("input_norm", [False, True])
@pytest.mark.parametrize("placement", qnorm.PLACEMENTS)
@pytest.mark.parametrize("norm", NORMS)
def test_layers_have_readable_names_in_placement_order(norm, placement, input_norm, dueling):
    net = build(make_spec(norm, placement, input_norm, dueling))
    text = str(net)
    for name in ("linear1", "act1", "linear2", "act2"):
        assert f"({name})" in text
    assert ("(q_head)" in text) is not dueling
    assert ("(value)" in text and "(advantage)" in text) is dueling
    has_norm = norm != "none"
    assert ("(norm1)" in text) is has_norm
    assert ("(norm2)" in text) is has_norm
    assert ("(input_norm)" in text) is (has_norm and input_norm)

    names = [name for name, _ in net.layers.named_children()]
    expected = ["input_norm"] if has_norm and input_norm else []
    for i in range(1, len(HIDDEN) + 1):
        block = (
            [f"linear{i}", f"norm{i}", f"act{i}"]
            if placement == "before"
            else [
                f"linear{i}",
                f"act{i}",
                f"norm{i}",
            ]
        )
        expected += [n for n in block if has_norm or not n.startswith("norm")]
    if not dueling:
        expected.append("q_head")
    assert names == expected


@pytest.mark.parametrize("activation", sorted(qnorm.ACTIVATIONS))
def test_activation_switch(activation):
    net = build(make_spec("layernorm", activation=activation))
    assert isinstance(net.layers.act1, qnorm.ACTIVATIONS[activation])


def test_network_casts_observations_to_float32():
    net = build(make_spec("batchnorm"))
    net.eval()
    x = torch.randint(0, 5, (4, OBS_DIM))
    with torch.no_grad():
        out = net(x)
        assert out.dtype == torch.float32
        assert torch.equal(out, net(x.to(torch.float32)))
        assert torch.equal(net(x.to(torch.float64)), out)


def test_dueling_head_centres_advantages():
    net = build(make_spec("none", dueling=True))
    x = torch.randn(8, OBS_DIM)
    with torch.no_grad():
        features = net.layers(x)
        q = net(x)
        value = net.head.value(features)
    torch.testing.assert_close(q.mean(dim=-1, keepdim=True), value)


@pytest.mark.parametrize(
    ("which", "normalized"),
    [("all", [1, 2, 3]), ("first", [1]), ("not_last", [1, 2])],
)
def test_norm_layers_chooses_which_hidden_layers_get_the_norm(which, normalized):
    spec = qnorm.QNetworkSpec(4, 2, (8, 8, 8), norm="batchnorm", norm_layers=which)
    net = qnorm.build_q_network(spec)
    names = dict(net.layers.named_children())
    assert sorted(int(n.removeprefix("norm")) for n in names if n.startswith("norm")) == normalized
    for i in (1, 2, 3):  # a Linear keeps its bias exactly where no BatchNorm follows it
        assert (names[f"linear{i}"].bias is None) == (i in normalized)
    assert qnorm.QNetworkSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_unknown_norm_layers_is_a_clear_error():
    with pytest.raises(qnorm.QnormError, match="norm_layers must be one of all, first"):
        qnorm.QNetworkSpec(4, 2, norm="batchnorm", norm_layers="middle")


def test_batchrenorm_options_reach_every_module_and_round_trip():
    options = {"warmup_steps": 100_000, "rmax": 2.0, "dmax": 1.0}
    spec = qnorm.QNetworkSpec(4, 2, norm="batchrenorm", norm_options=options)
    norms = [m for m in qnorm.build_q_network(spec).modules() if isinstance(m, BatchRenorm)]
    assert len(norms) == 2
    assert all((m.warmup_steps, m.rmax, m.dmax) == (100_000, 2.0, 1.0) for m in norms)
    assert not any(m.unbiased_running_var for m in norms)
    assert qnorm.QNetworkSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_a_batchrenorm_spec_saved_before_its_options_keeps_the_unbiased_running_variance():
    old = qnorm.QNetworkSpec(4, 2, norm="batchrenorm").to_dict()
    del old["norm_options"]
    spec = qnorm.QNetworkSpec.from_dict(old)
    assert spec.norm_options == {"unbiased_running_var": True}
    norms = [m for m in qnorm.build_q_network(spec).modules() if isinstance(m, BatchRenorm)]
    assert norms and all(m.unbiased_running_var for m in norms)


def test_options_a_norm_does_not_take_are_a_clear_error():
    with pytest.raises(qnorm.QnormError, match="norm 'batchnorm' takes no option rmax"):
        qnorm.QNetworkSpec(4, 2, norm="batchnorm", norm_options={"rmax": 2.0})
    with pytest.raises(qnorm.QnormError, match="it takes dmax, rmax"):
        qnorm.QNetworkSpec(4, 2, norm="batchrenorm", norm_options={"rmaxx": 2.0})
