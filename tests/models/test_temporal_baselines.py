"""Baseline temporal heads: mean pooling and Transformer encoders with learned or time positions."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from s4vision.models import MeanPoolHead, TransformerHead, create_temporal_head, list_temporal_heads
from s4vision.models.temporal_baselines import sinusoidal_positions
from s4vision.sampling import uniform_timestamps


def test_registered():
    assert {"mean_pool", "transformer", "vis4mer"} <= set(list_temporal_heads())
    assert isinstance(create_temporal_head("transformer", 8, 3, positions="sinusoidal"), TransformerHead)
    with pytest.raises(TypeError):
        create_temporal_head("mean_pool", 8, 3, depth=2)


def test_mean_pool_head():
    torch.manual_seed(0)
    head = MeanPoolHead(6, 3)
    x = torch.randn(2, 9, 6)
    expected = head.fc(F.layer_norm(x.mean(1), (6,), head.norm.weight, head.norm.bias))
    torch.testing.assert_close(head(x), expected)
    torch.testing.assert_close(head(x[:, :, None].expand(-1, -1, 4, -1)), expected)  # tokens averaged per frame


def test_sinusoidal_positions_formula():
    """Pairs ``sin, cos`` of ``p / 10000^(2i / dim)``, here ``dim = 4``: ``i = 0, 1`` (divisors 1, 100)."""
    p = np.array([0.0, 1.0, 2.5])
    expected = np.stack([np.sin(p), np.cos(p), np.sin(p / 100), np.cos(p / 100)], axis=1)
    np.testing.assert_allclose(sinusoidal_positions(torch.tensor(p), 4).numpy(), expected, rtol=1e-12)


def reference_transformer(head, tokens, codes):
    """Class token + codes -> the encoder's layers applied one by one -> norm of the class token."""
    x = torch.cat([head.cls_token.expand(tokens.shape[0], -1, -1), tokens], 1) + codes
    for layer in head.encoder.layers:
        x = layer(x)
    return head.fc(head.norm(x[:, 0]))


def test_learned_positions_over_patches():
    torch.manual_seed(0)
    head = TransformerHead(6, 3, embed_dim=8, num_heads=2, patch=3, max_tokens=10).eval()
    x = torch.randn(2, 14, 6)  # 4 whole patches, 2 frames dropped
    with torch.no_grad():
        tokens = head.proj(x)[:, :12].unflatten(1, (4, 3)).mean(2)
        torch.testing.assert_close(head(x), reference_transformer(head, tokens, head.pos_embed[0, :5]))
        torch.testing.assert_close(head(x, fps=30), head(x))  # frame-indexed: time is ignored
    with pytest.raises(ValueError, match="positions for 1 to 10"):
        head(torch.randn(1, 40, 6))


def test_time_positions_make_tokens_of_time_windows():
    """At 16 fps each 1/4 s token averages four frames; a signal constant within the windows gives
    the 8 fps logits exactly, jittered timestamps too, while learned positions change."""
    torch.manual_seed(0)
    timed = TransformerHead(6, 3, embed_dim=8, num_heads=2, patch=2, positions="sinusoidal", train_fps=8).eval()
    learned = TransformerHead(6, 3, embed_dim=8, num_heads=2, patch=2, max_tokens=64).eval()
    per_window = torch.randn(2, 10, 6)  # 10 windows of 1/4 s
    x8 = per_window.repeat_interleave(2, dim=1)  # 20 frames at 8 fps
    x16 = per_window.repeat_interleave(4, dim=1)  # 40 frames at 16 fps
    with torch.no_grad():
        tokens = timed.proj(x8).unflatten(1, (10, 2)).mean(2)
        codes = sinusoidal_positions(torch.arange(11.0), 8).float()
        reference = reference_transformer(timed, tokens, codes)
        torch.testing.assert_close(timed(x8, fps=8), reference)
        torch.testing.assert_close(timed(x16, fps=16), reference)
        jittered = uniform_timestamps(40, 16) + torch.rand(2, 40, dtype=torch.float64) * 0.5 / 16
        jittered[:, 0] = 0
        torch.testing.assert_close(timed(x16, timestamps=jittered), reference)
        assert (learned(x16) - learned(x8)).abs().max() > 1e-3
        # rows with their own timestamps: each row alone
        rows = timed(x16, timestamps=jittered)
        torch.testing.assert_close(rows[1:], timed(x16[1:], timestamps=jittered[1]))


def test_time_head_records_its_frame_rate():
    head = TransformerHead(6, 3, embed_dim=8, num_heads=2, positions="sinusoidal").train()
    head(torch.randn(1, 10, 6), fps=12)
    assert head.clock.train_fps == 12 and float(head.state_dict()["clock.fps"]) == 12
    with pytest.raises(ValueError, match="even embed_dim"):
        TransformerHead(6, 3, embed_dim=7, num_heads=1, positions="sinusoidal")
    with pytest.raises(ValueError, match="positions"):
        TransformerHead(6, 3, positions="rotary")
