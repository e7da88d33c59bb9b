"""The API around the ops: impl policy (use_impl, auto resolution and its cache) and the
nn.Modules (state_dict compatibility with nn.Conv1d/2d, from_conv, convert_depthwise)."""
from __future__ import annotations

import asyncio
import threading

import pytest
import torch
from reference import DEV, assert_matches, randn, reference_conv
from torch import nn

from models.depthwise import (IMPLS, DepthwiseConv1d, DepthwiseConv2d, convert_depthwise, current_impl,
                              depthwise_conv1d, dispatch, resolve_impl, use_impl)

IMPL_PARAMS = [pytest.param(i, id=i) for i in ("per_group", "slice_sum", "native", "auto")]


# ------------------------------------------------------------------ impl policy
def test_use_impl_nests_and_restores():
    assert current_impl() == "auto"
    with use_impl("per_group"):
        assert current_impl() == "per_group"
        with use_impl("native"):
            assert current_impl() == "native"
        assert current_impl() == "per_group"
    assert current_impl() == "auto"
    with pytest.raises(ValueError, match="per_group"):
        with use_impl("fast"):
            pass
    assert current_impl() == "auto"


def test_use_impl_is_isolated_per_thread_and_task():
    seen, barrier = {}, threading.Barrier(2)

    def worker(name):
        with use_impl(name):
            barrier.wait()                              # both inside their block at once
            seen[name] = current_impl()

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("per_group", "slice_sum")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"per_group": "per_group", "slice_sum": "slice_sum"}

    async def task(name):
        with use_impl(name):
            await asyncio.sleep(0.01)                   # interleave with the other task
            return current_impl()

    async def both():
        return await asyncio.gather(task("native"), task("compiled"))

    assert asyncio.run(both()) == ["native", "compiled"]
    assert current_impl() == "auto"


def test_impl_none_follows_use_impl(monkeypatch):
    ran = []
    from models.depthwise import per_group
    real = per_group.conv1d
    monkeypatch.setattr(per_group, "conv1d", lambda *a: ran.append("per_group") or real(*a))
    dispatch.clear_caches()
    x, w = randn(1, 3, 8), randn(3, 1, 3)
    with use_impl("per_group"):
        depthwise_conv1d(x, w)
    depthwise_conv1d(x, w, impl="slice_sum")
    assert ran == ["per_group"]
    dispatch.clear_caches()


def test_auto_is_resolved_once_per_signature_and_cached(monkeypatch):
    from models.depthwise import auto
    calls = []

    def choose(op, device, dtype, x_shape, weight_shape, stride, dilation, *, channels_last=False, graphed=False,
               padding=None):
        calls.append((op, torch.device(device).type, dtype, tuple(x_shape), tuple(weight_shape), stride, dilation,
                      channels_last, graphed))
        return "slice_sum"

    monkeypatch.setattr(auto, "choose", choose)
    dispatch.clear_caches()
    x, w = randn(2, 4, 9), randn(8, 1, 3)
    for _ in range(3):
        depthwise_conv1d(x, w, padding="causal", impl="auto")
    assert resolve_impl("conv1d", x, w, 1, (2, 0), 1) == "slice_sum"
    assert calls == [("conv1d", torch.device(DEV).type, torch.float32, (2, 4, 9), (8, 1, 3), 1, 1, False, False)]
    depthwise_conv1d(randn(2, 4, 10), w, padding="causal")     # new shape: asked again
    assert len(calls) == 2
    assert resolve_impl("decode", x, w, 1, (0, 0), 1, impl="native") == "native"   # concrete: no auto
    monkeypatch.setattr(auto, "choose", lambda *a, **kw: "cudnn")
    dispatch.clear_caches()
    with pytest.raises(RuntimeError, match="auto.choose returned 'cudnn'"):
        depthwise_conv1d(x, w)
    dispatch.clear_caches()


def test_auto_result_matches_reference_and_never_per_group_on_cpu():
    g = torch.Generator().manual_seed(11)
    for C, L, K in ((1024, 64, 3), (32, 500, 7), (8, 4, 4)):
        x, w = randn(1, C, L, gen=g, device="cpu"), randn(C, 1, K, gen=g, device="cpu")
        assert resolve_impl("conv1d", x, w, 1, (K - 1, 0), 1, "auto") in ("slice_sum", "compiled", "native")
        assert_matches(depthwise_conv1d(x, w, padding="causal"), reference_conv(x, w, padding="causal"), torch.float32)


# ------------------------------------------------------------------ modules
@pytest.mark.parametrize("impl", IMPL_PARAMS)
@pytest.mark.parametrize("C,m,K,stride,padding,dilation,bias", [
    pytest.param(6, 1, 3, 1, 1, 1, True, id="k3_pad1"),
    pytest.param(4, 2, 4, 1, "same", 2, False, id="mult2_same_dil2"),
    pytest.param(5, 3, 5, 3, 2, 1, True, id="mult3_stride3"),
])
def test_conv1d_module_loads_nn_conv_state_dict(impl, C, m, K, stride, padding, dilation, bias):
    torch.manual_seed(C)
    conv = nn.Conv1d(C, C * m, K, stride, padding, dilation, groups=C, bias=bias).to(DEV)
    mod = DepthwiseConv1d(C, C * m, K, stride, padding, dilation, bias=bias, impl=impl).to(DEV)
    assert mod.state_dict().keys() == conv.state_dict().keys()
    mod.load_state_dict(conv.state_dict())
    conv.load_state_dict(mod.state_dict())                   # and back
    x = randn(2, C, 17)
    assert_matches(mod(x), conv(x).detach(), torch.float32)


@pytest.mark.parametrize("impl", IMPL_PARAMS)
def test_conv2d_module_loads_nn_conv_state_dict_channels_last(impl):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=8).to(DEV)
    mod = DepthwiseConv2d(8, 16, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), impl=impl).to(DEV)
    mod.load_state_dict(conv.state_dict())
    x = randn(2, 8, 9, 10).contiguous(memory_format=torch.channels_last)
    out = mod(x)
    assert_matches(out, conv(x).detach(), torch.float32)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_module_init_and_repr_like_nn_conv():
    mod = DepthwiseConv1d(4, 8, 3, padding="causal")
    assert mod.weight.shape == (8, 1, 3) and mod.bias.shape == (8,)
    bound = 1 / 3 ** 0.5                                       # nn.Conv: 1 / sqrt(fan_in = 1 * K)
    assert mod.bias.abs().max() <= bound and mod.weight.abs().max() <= bound
    assert "causal" in repr(mod) and "impl=None" in repr(mod)
    with pytest.raises(ValueError, match="multiple C\\*m of in_channels C=4"):
        DepthwiseConv1d(4, 6, 3)
    with pytest.raises(ValueError, match="impl must be one of"):
        DepthwiseConv2d(4, 4, 3, impl="cudnn")


def test_from_conv_shares_parameters():
    conv = nn.Conv2d(3, 3, 3, padding=1, groups=3, bias=False)
    mod = DepthwiseConv2d.from_conv(conv, impl="slice_sum")
    assert mod.weight is conv.weight and mod.bias is None and mod.impl == "slice_sum"
    with pytest.raises(ValueError, match="depthwise Conv1d"):
        DepthwiseConv1d.from_conv(conv)
    with pytest.raises(ValueError, match="groups == in_channels"):
        DepthwiseConv2d.from_conv(nn.Conv2d(4, 4, 3, groups=2))


def test_convert_depthwise_swaps_only_depthwise_zero_padded_convs():
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),                                     # dense: kept
        nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),  # depthwise: swapped
                      nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=8)),  # multiplier 2: swapped
        nn.Conv2d(16, 16, 3, padding=1, groups=16, padding_mode="reflect"),  # reflect: kept
        nn.Conv2d(16, 16, 3, padding=1, groups=4),                         # grouped, not depthwise: kept
    ).to(DEV)
    x = randn(2, 3, 12, 12)
    ref = net(x).detach()
    assert convert_depthwise(net, impl="slice_sum") == 2
    assert isinstance(net[1][0], DepthwiseConv2d) and isinstance(net[1][2], DepthwiseConv2d)
    assert type(net[0]) is nn.Conv2d and type(net[2]) is nn.Conv2d and type(net[3]) is nn.Conv2d
    assert_matches(net(x).detach(), ref, torch.float32)
    assert convert_depthwise(net) == 0                                     # idempotent
    seq1d = nn.Sequential(nn.Conv1d(4, 4, 3, padding=2, groups=4))
    assert convert_depthwise(seq1d) == 1 and isinstance(seq1d[0], DepthwiseConv1d)
    assert set(IMPLS) == {"per_group", "slice_sum", "compiled", "fused", "native"}


class _StandardisedConv2d(nn.Conv2d):
    """A conv subclass whose forward differs from nn.Conv2d's (weight standardisation)."""
    def forward(self, x):
        w = (self.weight - self.weight.mean((1, 2, 3), keepdim=True)) / (self.weight.std((1, 2, 3), keepdim=True) + 1e-5)
        return self._conv_forward(x, w, self.bias)


def test_convert_depthwise_leaves_convs_that_compute_differently():
    """Subclasses, parametrized weights (weight_norm) and hooked convs are depthwise by shape but
    not plain convs: swapping them would change the output or drop state, so they are kept."""
    torch.manual_seed(2)
    hooked = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    hooked.register_forward_hook(lambda module, args, out: out * 2)
    net = nn.Sequential(
        _StandardisedConv2d(8, 8, 3, padding=1, groups=8),
        nn.utils.parametrizations.weight_norm(nn.Conv2d(8, 8, 3, padding=1, groups=8)),
        hooked,
        nn.Conv2d(8, 8, 3, padding=1, groups=8),                           # plain: swapped
    ).to(DEV)
    x = randn(2, 8, 9, 9)
    ref, keys = net(x).detach(), set(net.state_dict())
    assert convert_depthwise(net, impl="slice_sum") == 1
    assert isinstance(net[3], DepthwiseConv2d)
    assert type(net[0]) is _StandardisedConv2d and nn.utils.parametrize.is_parametrized(net[1]) and net[2] is hooked
    assert set(net.state_dict()) == keys
    assert_matches(net(x).detach(), ref, torch.float32)


class _TiedTwice(nn.Module):
    """One depthwise conv registered under two names (a tied/shared block, applied twice)."""
    def __init__(self):
        super().__init__()
        self.first = nn.Conv1d(4, 4, 3, padding=1, groups=4)
        self.again = self.first

    def forward(self, x):
        return self.again(torch.relu(self.first(x)))


def test_convert_depthwise_swaps_a_shared_conv_under_every_name():
    """named_children() skips a module it has seen, so the second name kept the nn.Conv1d and
    the two names stopped being one module (converting again swapped it a second time)."""
    torch.manual_seed(3)
    net = _TiedTwice().to(DEV)
    x = randn(2, 4, 9)
    ref = net(x).detach()
    assert convert_depthwise(net) == 1
    assert isinstance(net.again, DepthwiseConv1d) and net.again is net.first
    assert_matches(net(x).detach(), ref, torch.float32)
    assert convert_depthwise(net) == 0


@pytest.mark.parametrize("cls", [pytest.param(DepthwiseConv1d, id="1d"), pytest.param(DepthwiseConv2d, id="2d")])
@pytest.mark.parametrize("channels", [pytest.param((4.0, 4), id="float-in"), pytest.param(("4", 4), id="str-in"),
                                      pytest.param((4, 8.0), id="float-out")])
def test_module_channel_counts_must_be_ints(cls, channels):
    """DepthwiseConv1d(4.0, 4, 3) was built (groups=4.0); DepthwiseConv1d('4', 4, 3) a TypeError."""
    with pytest.raises(ValueError, match="channels must be an int"):
        cls(*channels, 3)
