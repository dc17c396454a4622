import math

import pytest
import torch
from torch import nn

from s4vision.engine.optim import WarmupCosine, create_scheduler, param_groups
from s4vision.layers import S4


class _SSMNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 8)
        self.s4 = S4(8, d_state=4)
        self.norm = nn.LayerNorm(8)
        self.pos = nn.Parameter(torch.zeros(1, 8, 5))
        self.head = nn.Linear(8, 2)
        self.frozen = nn.Parameter(torch.zeros(4, 4), requires_grad=False)

    def no_weight_decay(self):
        return {"pos", "s4.ssm.*"}


def test_groups_split_ssm_no_decay_and_decay():
    model = _SSMNet()
    groups = {g["name"]: g for g in param_groups(model, lr=1e-2, weight_decay=0.05, ssm_lr=1e-3)}
    names = {id(p): n for n, p in model.named_parameters()}
    members = {key: {names[id(p)] for p in g["params"]} for key, g in groups.items()}

    # S4's parameters are its kernel generator's, its skip term D and its output projection
    kernel_params = {f"s4.{n}" for n, _ in model.s4.named_parameters() if not n.startswith(("D", "out_proj."))}
    assert {"log_dt", "C", "B"} <= {n.rsplit(".", 1)[1] for n in kernel_params}
    assert members["ssm"] == kernel_params
    matrices = {n for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1}
    assert members["decay"] == matrices - kernel_params - {"pos"}
    assert {"proj.weight", "head.weight", "s4.D"} <= members["decay"]
    assert {"pos", "proj.bias", "norm.weight", "norm.bias", "head.bias"} <= members["no_decay"]
    # every trainable parameter exactly once, frozen ones nowhere
    listed = [names[id(p)] for g in groups.values() for p in g["params"]]
    assert sorted(listed) == sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert (groups["ssm"]["lr"], groups["ssm"]["weight_decay"]) == (1e-3, 0.0)
    assert (groups["decay"]["lr"], groups["decay"]["weight_decay"]) == (1e-2, 0.05)
    assert groups["no_decay"]["weight_decay"] == 0.0


def test_ssm_lr_none_means_base_lr():
    groups = {g["name"]: g for g in param_groups(_SSMNet(), lr=1e-2, weight_decay=0.05, ssm_lr=None)}
    assert groups["ssm"]["lr"] == 1e-2 and groups["ssm"]["weight_decay"] == 0.0


def test_warmup_cosine_shape():
    total, warmup, floor = 110, 10, 0.1
    f = WarmupCosine(total, warmup, floor)
    ramp = [f(s) for s in range(warmup + 1)]
    assert all(b > a for a, b in zip(ramp, ramp[1:])) and ramp[-1] == pytest.approx(1.0)
    assert ramp[0] == pytest.approx(1 / (warmup + 1))
    assert f(warmup + 50) == pytest.approx((1 + floor) / 2)  # halfway down the cosine
    assert f(total) == pytest.approx(floor) and f(total + 5) == pytest.approx(floor)
    decay = [f(s) for s in range(warmup, total + 1)]
    assert all(b <= a for a, b in zip(decay, decay[1:]))
    with pytest.raises(ValueError, match="total_steps"):
        WarmupCosine(0)


def test_scheduler_scales_every_group_by_the_same_factor():
    model = _SSMNet()
    opt = torch.optim.AdamW(param_groups(model, lr=1e-2, weight_decay=0.05, ssm_lr=1e-3))
    sched = create_scheduler(opt, total_steps=20, warmup_steps=4, min_ratio=0.0)
    for step in range(1, 12):
        opt.step()
        sched.step()
        factor = WarmupCosine(20, 4, 0.0)(step)
        lrs = {g["name"]: g["lr"] for g in opt.param_groups}
        assert lrs["decay"] == pytest.approx(1e-2 * factor) and lrs["ssm"] == pytest.approx(1e-3 * factor)
    assert math.isclose(sched.state_dict()["last_epoch"], 11)
