"""add_dropconnect / remove_dropconnect: DropConnect on a whole model's chosen layers, reversibly.

The first tests are Baal's ``tests/bayesian/dropconnect_test.py`` (``patch_module(module,
layers=[...], weight_dropout=0.2, inplace=...)``) with the same calls and assertions where
dropkit agrees; where it deliberately differs (it keeps the trained weights and leaves the
other dropout layers alone, see the README's compatibility section) the test asserts that.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from dropkit import mc, nn


def _baal_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, kernel_size=10),
        torch.nn.ReLU(),
        torch.nn.Dropout(p=0.5),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 1),
    )


@pytest.mark.parametrize("inplace", [True, False])
@pytest.mark.parametrize(
    "layers", [(torch.nn.Linear,), (torch.nn.Linear, torch.nn.Conv2d)], ids=["Linear", "both"]
)
def test_patch_module_changes_the_chosen_layers(inplace, layers) -> None:
    test_module = _baal_model()
    conv_w = test_module[0].weight.clone().detach()
    linear_w = test_module[-1].weight.clone().detach()

    mc_test_module = nn.add_dropconnect(test_module, 0.2, layers=layers, inplace=inplace)

    # objects should be the same if inplace is True and not otherwise:
    assert (mc_test_module is test_module) == inplace
    assert isinstance(mc_test_module[-1], nn.WeightDrop)
    assert mc_test_module[-1].p == 0.2
    if layers == (torch.nn.Linear,):
        assert type(mc_test_module[0]) is torch.nn.Conv2d
        assert torch.equal(mc_test_module[0].weight, conv_w)
    else:
        assert isinstance(mc_test_module[0], nn.WeightDrop)
        assert type(mc_test_module[0].module) is torch.nn.Conv2d
    # Baal re-initializes the patched layers and sets the other dropout layers' p to 0;
    # dropkit keeps the trained weights (the same tensors) and the other dropout as it was.
    assert torch.equal(mc_test_module[-1].module.weight, linear_w)
    if not inplace:
        assert mc_test_module[-1].module.weight is not test_module[-1].weight  # a deep copy
    assert mc_test_module[2].p == 0.5


def test_weight_change_after_forward_pass_under_mc_mode() -> None:
    """Baal's ``test_weight_change_after_forward_pass``: with MC on in eval, the weights used
    differ from the stored ones, so two forwards differ; dropkit's eval forward (MC off) is the
    original model's, bit for bit."""
    original = _baal_model().eval()
    patched = nn.add_dropconnect(original, 0.2).eval()
    x = torch.randn(4, 3, 10, 10)
    assert torch.equal(patched(x), original(x))
    torch.manual_seed(0)
    with mc.mc_mode(patched):
        a, b = patched(x), patched(x)
    assert not torch.equal(a, b)
    assert not patched[-1].training  # flags restored


def test_predict_samples_vary_and_each_sample_is_one_weight_mask() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 6, bias=False))
    patched = nn.add_dropconnect(model, 0.5)
    result = mc.predict(patched, torch.eye(6), samples=20, seed=0)
    assert result.strategy.startswith("loop")  # one weight mask per sample
    # On the identity input a sample's output is its dropped weight matrix (transposed):
    # every entry is 0 or the weight times 2.
    w = model[0].weight.detach().t()
    for sample in result.samples:
        kept = sample != 0
        torch.testing.assert_close(sample[kept], 2 * w[kept])
    assert len({tuple(s.ne(0).flatten().tolist()) for s in result.samples}) > 1


def test_the_dropped_weight_count_is_binomial() -> None:
    """On the identity input a training forward shows the dropped weights: their count over
    10 000 weights at p = 0.2 is within 5 standard deviations of 2 000."""
    torch.manual_seed(0)
    patched = nn.add_dropconnect(torch.nn.Linear(100, 100, bias=False), 0.2).train()
    dropped = int(patched(torch.eye(100)).eq(0).sum())
    n, p = 100 * 100, 0.2
    assert abs(dropped - n * p) < 5 * (n * p * (1 - p)) ** 0.5


def test_remove_dropconnect_gives_back_the_original() -> None:
    original = _baal_model()
    patched = nn.add_dropconnect(original, 0.3, layers=(torch.nn.Linear, torch.nn.Conv2d))
    assert set(patched.state_dict()) == {
        "0.module.weight", "0.module.bias", "4.module.weight", "4.module.bias"
    }  # fmt: skip
    restored = nn.remove_dropconnect(patched)
    assert restored is not patched  # a deep copy by default
    assert repr(restored) == repr(original)
    assert restored.state_dict().keys() == original.state_dict().keys()
    for key, value in original.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value)
    assert nn.remove_dropconnect(patched, inplace=True) is patched
    assert not any(isinstance(m, nn.WeightDrop) for m in patched.modules())


def test_a_layer_passed_alone_and_a_shared_layer() -> None:
    layer = torch.nn.Linear(3, 3)
    wrapped = nn.add_dropconnect(layer, 0.1)
    assert isinstance(wrapped, nn.WeightDrop)
    assert type(nn.remove_dropconnect(wrapped)) is torch.nn.Linear
    shared = torch.nn.Linear(3, 3)
    model = torch.nn.Sequential(shared, torch.nn.ReLU(), shared)
    patched = nn.add_dropconnect(model, 0.1)
    assert patched[0] is patched[2]  # one wrapper for the one layer
    with pytest.warns(UserWarning, match="no layer of class Linear outside a WeightDrop"):
        again = nn.add_dropconnect(patched, 0.1)
    assert type(again[0].module) is torch.nn.Linear  # not wrapped twice


def test_exact_classes_only_and_nothing_to_patch_warns() -> None:
    attention = torch.nn.MultiheadAttention(8, 2)  # out_proj subclasses Linear; MHA reads it
    with pytest.warns(UserWarning, match="has no layer of class Linear"):
        same = nn.add_dropconnect(attention, 0.2)
    assert type(same.out_proj) is type(attention.out_proj)
    with pytest.warns(UserWarning, match="has no WeightDrop"):
        nn.remove_dropconnect(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nn.add_dropconnect(torch.nn.Sequential(torch.nn.Linear(2, 2)), 0.2)


def test_bad_arguments_name_the_fix() -> None:
    model = _baal_model()
    with pytest.raises(TypeError, match=r"got 'Linear'; pass torch.nn.Linear"):
        nn.add_dropconnect(model, 0.2, layers=["Linear"])  # Baal's spelling
    with pytest.raises(ValueError, match=r"add_dropconnect: expected p in \[0, 1\]"):
        nn.add_dropconnect(model, 1.2)
    with pytest.raises(ValueError, match="Linear has no parameter named \\['kernel'\\]"):
        nn.add_dropconnect(model, 0.2, weights="kernel")
