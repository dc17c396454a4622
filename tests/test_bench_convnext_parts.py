"""tools/bench_convnext_parts.py times every part it names, on the inputs the model gives them."""
import json

import timm
import torch

from _helpers import load_tool


def test_parts_are_fed_the_activations_they_see_in_the_model():
    tool = load_tool("bench_convnext_parts")
    model = timm.create_model("s4nd_convnext_atto", img_size=64).eval()
    x = torch.randn(1, 3, 64, 64)
    named = tool.parts(model, x)
    assert list(named) == ["stem", "mixer 0", "downsample 1", "mixer 1", "downsample 2", "mixer 2",
                           "downsample 3", "mixer 3", "forward"]
    with torch.no_grad():
        # running the parts in order (with the blocks in between) is the forward pass
        h = model.stem(x)
        for i, stage in enumerate(model.stages):
            if i:
                assert torch.equal(named[f"downsample {i}"][1], h)
            h = stage.downsample(h)
            assert torch.equal(named[f"mixer {i}"][1], h) and named[f"mixer {i}"][0] is stage.blocks[0].mixer
            h = stage.blocks(h)
        torch.testing.assert_close(model.forward_head(h), named["forward"][0](x))


def test_smoke_run_writes_one_row_per_part_and_clock(tmp_path):
    tool = load_tool("bench_convnext_parts")
    out = tmp_path / "parts.json"
    result = tool.main(["--models", "s4nd_convnext_atto", "--resolution", "32", "--rounds", "1", "--out", str(out)])
    rows = json.loads(out.read_text())["results"]
    assert rows == json.loads(json.dumps(result["results"]))
    assert {(r["part"], r["clock"]) for r in rows} == {
        (p, c) for p in ["stem", "forward"] + [f"mixer {i}" for i in range(4)] + [f"downsample {i}" for i in (1, 2, 3)]
        for c in ("wall@2", "cpu@1")}
    assert all(r["ms"] > 0 and r["baseline_ms"] > 0 and r["ratio"] == r["ms"] / r["baseline_ms"] for r in rows)


def test_kernel_generation_steps_cover_every_s4nd_layer():
    from s4vision.layers import S4ND

    tool = load_tool("bench_convnext_parts")
    model = timm.create_model("s4nd_convnext_atto", img_size=32)
    steps = tool.kernel_generation_steps(model, torch.randn(1, 3, 32, 32))
    layers = {n: m for n, m in model.named_modules() if isinstance(m, S4ND)}
    assert set(steps) == set(layers) and len(steps) == 16  # stem, 3 downsampling layers, 12 mixers
    assert model.training
    steps["stages.2.blocks.0.mixer"]()  # backpropagates into that layer's SSM parameters only
    assert all(p.grad is not None for p in layers["stages.2.blocks.0.mixer"].ssm.parameters())
    assert all(p.grad is None for p in layers["stem.down"].ssm.parameters())
