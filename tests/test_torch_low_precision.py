"""backends.torch with bfloat16/float16 params and the state_dtype, master_weights,
rounding and seed options: bit for bit as the NumPy-level backends.Adam, checkpoints both
ways with torch.optim.Adam, round trips that resume bit for bit, and every refusal named
before anything changes."""
import copy
import io

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[torch]')")

from backends import Adam as NumpyLevelAdam  # noqa: E402
from backends.formats import BFLOAT16  # noqa: E402
from backends.torch import Adam, AdamW  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::backends.AutoFallbackWarning")

SHAPES = [(5, 3), (7,), (1,), (5000,)]  # 5000: int8 state (>= 4096 elements), two chunks
#: name -> (params' dtype, options)
FORMATS = {
    "bf16 nearest": (torch.bfloat16, {}),
    "bf16 + bf16 state": (torch.bfloat16, {"state_dtype": "bfloat16"}),
    "bf16 + fp32 state": (torch.bfloat16, {"state_dtype": "float32"}),
    "bf16 stochastic": (torch.bfloat16, {"rounding": "stochastic", "seed": 7}),
    "bf16 kahan": (torch.bfloat16, {"rounding": "kahan"}),
    "bf16 master": (torch.bfloat16, {"master_weights": True}),
    "fp16 nearest": (torch.float16, {}),
    "fp16 master": (torch.float16, {"master_weights": True}),
    "fp16 kahan": (torch.float16, {"rounding": "kahan"}),
    "fp32 + bf16 state": (torch.float32, {"state_dtype": "bfloat16"}),
    "fp32 + int8 state": (torch.float32, {"state_dtype": "int8"}),
}


def _params(dtype, seed=0, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).to(dtype) for s in shapes]


def _grads(params, seed):
    g = torch.Generator().manual_seed(1000 + seed)
    return [torch.randn(p.shape, generator=g).to(p.dtype) for p in params]


def _numpy(t):
    """A NumPy view of a tensor (bfloat16 as ml_dtypes' bfloat16)."""
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(BFLOAT16)
    return t.numpy()


def _bits(t):
    return _numpy(t).reshape(-1).view(np.uint8).tobytes()


def _train(opt, params, steps, seed=0, lrs=None):
    """``steps`` steps of seeded gradients; ``lrs[s]`` (one per group) set before step s."""
    for s in range(seed, seed + steps):
        for p, g in zip(params, _grads(params, s)):
            p.grad = g
        if lrs is not None:
            for group, lr in zip(opt.param_groups, lrs[s - seed]):
                group["lr"] = lr
        opt.step()


def _groups(params):
    return [{"params": params[:2], "weight_decay": 0.1}, {"params": params[2:], "lr": 3e-3}]


LRS = [(1e-2, 3e-3), (5e-3, 2e-3), (2e-2, 1e-3), (1e-2, 4e-3)]


@pytest.mark.parametrize("backend", ["numba", "numpy", "python"])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_bit_identical_to_the_numpy_level_adam(backend, fmt):
    """Two param groups, lr changed between steps (a schedule), four steps."""
    dtype, options = FORMATS[fmt]
    ours = _params(dtype)
    theirs = [_numpy(p.clone()) for p in ours]
    opt = AdamW(_groups(ours), lr=1e-2, backend=backend, **options)
    ref = NumpyLevelAdam(_groups(theirs), backend=backend, lr=1e-2, decoupled=True,
                         weight_decay=1e-2, **options)
    for s, rates in enumerate(LRS):
        grads = _grads(ours, s)
        for p, g in zip(ours, grads):
            p.grad = g
        for group, ref_group, lr in zip(opt.param_groups, ref.param_groups, rates):
            group["lr"] = ref_group["lr"] = lr
        opt.step()
        ref.step([_numpy(g) for g in grads])
        assert [_bits(p) for p in ours] == [a.view(np.uint8).tobytes() for a in theirs], s
    layout = ref.states[1]
    for k, p in enumerate(ours[2:]):
        for name in ("master_params", "compensation", "exp_avg_scale"):
            column = getattr(layout, name)
            if column is not None and column[k] is not None:
                assert _bits(opt.state[p][name]) == column[k].view(np.uint8).tobytes()


@pytest.mark.parametrize("backend", ["numba", "numpy", "python"])
@pytest.mark.parametrize("fmt", ["bf16 nearest", "bf16 stochastic", "fp16 master"])
def test_float32_grads_step_as_the_numpy_level(backend, fmt):
    """Low-precision params whose ``grad_dtype`` is float32 take float32 gradients
    unrounded, as backends.Adam does."""
    dtype, options = FORMATS[fmt]
    ours = _params(dtype)
    theirs = [_numpy(p.clone()) for p in ours]
    for p in ours:
        p.grad_dtype = torch.float32
    opt = Adam(_groups(ours), lr=1e-2, backend=backend, **options)
    ref = NumpyLevelAdam(_groups(theirs), backend=backend, lr=1e-2, **options)
    for s in range(3):
        grads = _grads(_params(torch.float32), s)
        for p, g in zip(ours, grads):
            p.grad = g
        opt.step()
        ref.step([g.numpy() for g in grads])
        assert [_bits(p) for p in ours] == [a.view(np.uint8).tobytes() for a in theirs], s


def test_the_state_holds_what_the_format_needs():
    p = _params(torch.bfloat16, shapes=[(3,)])
    opt = Adam(p, backend="numpy", master_weights=True)
    _train(opt, p, 1)
    state = opt.state[p[0]]
    assert {k: v.dtype for k, v in state.items()} == {
        "step": torch.float32, "exp_avg": torch.float32, "exp_avg_sq": torch.float32,
        "master_params": torch.float32}
    big = _params(torch.float32, shapes=[(5000,), (3,)])
    opt = Adam(big, backend="numba", state_dtype="int8")
    _train(opt, big, 1)
    assert opt.state[big[0]]["exp_avg"].dtype == torch.uint8
    assert opt.state[big[0]]["exp_avg_scale"].shape == (20,)
    assert "exp_avg_scale" not in opt.state[big[1]]  # small tensors keep float32 state
    assert opt.state[big[1]]["exp_avg"].dtype == torch.float32


def _saved(opt):
    """opt.state_dict() through torch.save and torch.load."""
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_a_round_trip_resumes_bit_for_bit(backend, fmt):
    """Saved after 2 steps, loaded into a new optimizer (default seed: the saved one is
    adopted), 2 more steps: the bits of an uninterrupted run."""
    dtype, options = FORMATS[fmt]
    straight = _params(dtype)
    opt = Adam(_groups(straight), lr=1e-2, backend=backend, **options)
    _train(opt, straight, 4, lrs=LRS)
    resumed = _params(dtype)
    first = Adam(_groups(resumed), lr=1e-2, backend=backend, **options)
    _train(first, resumed, 2, lrs=LRS)
    checkpoint = _saved(first)
    again = Adam(_groups(resumed), lr=1e-2, backend=backend,
                 **{k: v for k, v in options.items() if k != "seed"})
    again.load_state_dict(checkpoint)
    _train(again, resumed, 2, seed=2, lrs=LRS[2:])
    assert [_bits(p) for p in resumed] == [_bits(p) for p in straight]
    for a, b in zip(resumed, straight):
        assert again.state[a].keys() == opt.state[b].keys()
        assert all(_bits(again.state[a][k]) == _bits(opt.state[b][k]) for k in opt.state[b])


def _continue_beside_torch(ours_first: bool):
    """bf16 params, 3 steps (lr 1e-2) by one optimizer, the checkpoint into the other, 3
    more; against torch.optim.Adam's own 6 steps: (largest |difference|, share of the
    elements that differ)."""
    params = _params(torch.bfloat16)
    kinds = [lambda ps: Adam(ps, lr=1e-2, backend="numba"),
             lambda ps: torch.optim.Adam(ps, lr=1e-2)]
    first_kind, second_kind = kinds if ours_first else kinds[::-1]
    first = first_kind(params)
    _train(first, params, 3)
    second = second_kind(params)
    second.load_state_dict(_saved(first))
    assert all(second.state[p]["exp_avg"].dtype == torch.bfloat16 for p in params)
    _train(second, params, 3, seed=3)
    reference = _params(torch.bfloat16)
    _train(torch.optim.Adam(reference, lr=1e-2), reference, 6)
    gap = max(float((a.float() - b.float()).abs().max()) for a, b in zip(params, reference))
    differ = sum(int((a != b).sum()) for a, b in zip(params, reference))
    return gap, differ / sum(p.numel() for p in params)


@pytest.mark.parametrize("ours_first", [True, False], ids=["ours-to-torch", "torch-to-ours"])
def test_bf16_checkpoints_move_both_ways_with_torch(ours_first):
    """torch.optim.Adam steps bf16 in bf16 arithmetic (each op rounded), ours in float32
    rounded once, so the runs part by a bf16 spacing here and there: measured, the largest
    difference 0.0078 (ours to torch) and 0.0156 (torch to ours), 1.6 lr, one spacing of
    a param in [2, 4); 4.5% and 2.2% of the elements differ (ours alone for 6 steps: also
    0.0156 from torch). Bound: 2 lr, and under 10% of the elements."""
    gap, share = _continue_beside_torch(ours_first)
    assert gap <= 2e-2 and share < 0.1


@pytest.mark.parametrize("fmt", ["bf16 master", "bf16 stochastic", "bf16 kahan",
                                 "bf16 + fp32 state", "fp16 master"])
def test_torch_loads_our_checkpoint_of_a_format_it_has_not(fmt):
    """Extra keys (master copy, compensation, the seed) ignored, float32 moments cast to
    the params' dtype: torch.optim.Adam loads ours and steps on (each param moved by at
    most 2 lr, Adam's bound being about lr)."""
    dtype, options = FORMATS[fmt]
    params = _params(dtype)
    opt = Adam(params, lr=1e-2, backend="numba", **options)
    _train(opt, params, 5)
    saved = _saved(opt)
    assert set(saved["state"][0]) - {"step", "exp_avg", "exp_avg_sq"} <= {
        "master_params", "compensation", "rounding_seed"}
    theirs = torch.optim.Adam(params, lr=1e-2)
    theirs.load_state_dict(saved)
    assert theirs.state[params[0]]["exp_avg"].dtype == dtype
    before = [p.float() for p in params]
    _train(theirs, params, 1, seed=5)
    assert max(float((a.float() - b).abs().max()) for a, b in zip(params, before)) <= 2e-2


def test_a_torch_checkpoint_starts_master_copies_and_compensation_afresh():
    params = _params(torch.bfloat16, shapes=[(4,)])
    theirs = torch.optim.Adam(params, lr=1e-2)
    _train(theirs, params, 2)
    for options, extra in (({"master_weights": True}, "master_params"),
                           ({"rounding": "kahan"}, "compensation")):
        ours = Adam(params, lr=1e-2, backend="numpy", **options)
        ours.load_state_dict(theirs.state_dict())
        _train(ours, params, 1, seed=2)
        assert extra in ours.state[params[0]]
        assert ours.state[params[0]]["exp_avg"].dtype == (
            torch.float32 if "master_weights" in options else torch.bfloat16)


#: (a param dtype the options take, one they refuse, options, message): what the NumPy
#: level refuses, refused here too.
REFUSED = [
    (torch.bfloat16, torch.float16, {"rounding": "stochastic"}, "stochastic.*bfloat16"),
    (torch.float32, torch.float64, {"state_dtype": "bfloat16"}, "float64 takes no"),
    (torch.float16, torch.float32, {"master_weights": True}, "nothing to round"),
    (torch.bfloat16, torch.float32, {"rounding": "kahan"}, "nothing to round"),
    (torch.float32, torch.bfloat16, {"state_dtype": "int8"}, "int8.*float32 params"),
]


@pytest.mark.parametrize("good, dtype, options, message", REFUSED,
                         ids=[f"{d}-{o}" for _, d, o, _ in REFUSED])
def test_refused_at_construction_naming_the_param(good, dtype, options, message):
    params = [torch.zeros(3, dtype=good), torch.zeros(4, dtype=dtype)]
    with pytest.raises(TypeError, match=message) as caught:
        Adam([{"params": params[:1]}, {"params": params[1:]}], backend="numpy", **options)
    assert "param_groups[1]['params'][0]" in str(caught.value)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_refused_at_a_step_before_anything_changes(backend):
    """A param rebound to float16 under stochastic rounding: named, nothing stepped."""
    first, second = _params(torch.bfloat16, shapes=[(4,)]), _params(torch.bfloat16, 1, [(3,)])
    opt = Adam([{"params": first}, {"params": second}], backend=backend,
               rounding="stochastic")
    _train(opt, first + second, 1)
    second[0].data = torch.zeros(3, dtype=torch.float16)
    for p, g in zip(first + second, _grads(first + second, 1)):
        p.grad = g
    before = copy.deepcopy((first, [opt.state[p] for p in first]))
    with pytest.raises(TypeError, match="stochastic.*param_groups\\[1\\]\\['params'\\]\\[0\\]"):
        opt.step()
    assert _bits(first[0]) == _bits(before[0][0])
    assert all(torch.equal(opt.state[first[0]][k], v) for k, v in before[1][0].items())


@pytest.mark.parametrize("bad, message", [
    ({"rounding": "up"}, "Invalid rounding"), ({"state_dtype": "int4"}, "Invalid state_dtype"),
    ({"seed": -1}, "Invalid seed"), ({"master_weights": True, "rounding": "kahan"}, "master"),
])
def test_bad_options_are_named(bad, message):
    with pytest.raises((TypeError, ValueError), match=message):
        Adam(_params(torch.bfloat16), **bad)


def test_a_loaded_state_of_another_format_is_refused_and_changes_nothing():
    """int8 codes where bf16 moments belong: named, and the optimizer as it was."""
    big = _params(torch.float32, shapes=[(5000,)])
    int8 = Adam(big, backend="numpy", state_dtype="int8")
    _train(int8, big, 1)
    params = _params(torch.bfloat16, shapes=[(5000,)])
    opt = Adam(params, backend="numpy")
    _train(opt, params, 1)
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['params'\]\[0\] "
                                        r"state\['exp_avg'\] has dtype torch.uint8"):
        opt.load_state_dict(int8.state_dict())
    after = opt.state_dict()
    assert all(torch.equal(after["state"][0][k], v) for k, v in before["state"][0].items())


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_a_group_of_bf16_and_float32_params_steps_as_the_numpy_level(backend):
    """One dispatch per dtype (the float32 one on Numba's table kernel): the bits of
    backends.Adam's one low-precision step of the whole group."""
    ours = _params(torch.bfloat16, shapes=[(5, 3), (7,)]) + _params(torch.float32, 1,
                                                                     [(9,), (4000,)])
    theirs = [_numpy(p.clone()) for p in ours]
    opt = Adam(ours, lr=1e-2, backend=backend)
    ref = NumpyLevelAdam(theirs, backend=backend, lr=1e-2)
    for s in range(3):
        grads = _grads(ours, s)
        for p, g in zip(ours, grads):
            p.grad = g
        opt.step()
        ref.step([_numpy(g) for g in grads])
    assert [_bits(p) for p in ours] == [a.view(np.uint8).tobytes() for a in theirs]
