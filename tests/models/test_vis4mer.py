"""ViS4mer and VideoClassifier: stage arithmetic, token handling, streaming, end to end."""
import pytest
import timm
import torch
import torch.nn.functional as F

from s4vision.models.vis4mer import TemporalPool, VideoClassifier, ViS4mer, frame_tokens


def small_head(**kwargs):
    args = dict(embed_dim=16, depth=2, d_state=8) | kwargs
    return ViS4mer(args.pop("dim", 12), args.pop("num_classes", 5), **args)


def test_forward_follows_the_stage_recipe():
    """Recompute a 2-stage head by hand from its modules: S4 residual, pool, MLP, mean, fc."""
    torch.manual_seed(0)
    head = small_head(pool="max").eval()
    x = torch.randn(3, 21, 12)
    with torch.no_grad():
        h = head.proj.weight[..., 0] @ x.transpose(1, 2) + head.proj.bias[:, None]  # (B, 16, 21)
        lengths = []
        for stage in head.stages:
            normed = F.layer_norm(h.transpose(1, 2), (h.shape[1],), stage.norm.weight, stage.norm.bias, 1e-6)
            h = h + stage.s4(normed.transpose(1, 2))
            h = F.max_pool1d(h, 2)
            h = F.gelu(stage.mlp[0].weight[..., 0] @ h + stage.mlp[0].bias[:, None])
            lengths.append(h.shape[-1])
        expected = head.fc(h.mean(-1))
        assert lengths == [10, 5] and h.shape[1] == 4  # lengths and widths halve per stage
        torch.testing.assert_close(head(x), expected)
        assert head.forward_features(x).shape == (3, 4, 5)
        assert head.forward_head(head.forward_features(x), pre_logits=True).shape == (3, 4)


def test_token_input():
    torch.manual_seed(0)
    tokens = torch.randn(2, 9, 4, 12)
    mean_head = small_head(token_pool="mean").eval()
    flat_head = small_head(token_pool="flatten").eval()
    flat_head.load_state_dict(mean_head.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(mean_head(tokens), mean_head(tokens.mean(2)))
        torch.testing.assert_close(flat_head(tokens), flat_head(tokens.flatten(1, 2)))  # time-major T * N
        assert flat_head.forward_features(tokens).shape[-1] == 9 * 4 // 4


def test_bidirectional_sees_the_future_and_causal_does_not():
    torch.manual_seed(0)
    x = torch.randn(1, 32, 12)
    changed = x.clone()
    changed[:, -4:] += 1
    for causal in (False, True):
        head = small_head(bidirectional=not causal, depth=1).eval()
        with torch.no_grad():
            early = head.forward_features(x)[..., :8]  # positions from the first 16 frames
            early_changed = head.forward_features(changed)[..., :8]
        assert torch.allclose(early, early_changed) == causal


@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("shape, token_pool", [((2, 61, 12), "mean"), ((2, 23, 3, 12), "flatten"), ((2, 40, 3, 12), "mean")])
def test_stream_matches_offline_forward(pool, shape, token_pool):
    torch.manual_seed(0)
    head = small_head(bidirectional=False, depth=3, embed_dim=32, pool=pool, token_pool=token_pool).eval()
    x = torch.randn(*shape)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        expected = head(x)
        for _ in range(3):  # random chunkings, sizes 1 to 11
            state, t = None, 0
            while t < x.shape[1]:
                size = int(torch.randint(1, 12, (1,), generator=generator))
                logits, state = head.stream(x[:, t:t + size], state)
                t += size
            torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
        steps = shape[1] * (shape[2] if token_pool == "flatten" else 1)
        assert state.count == steps // 8


def test_temporal_pool_stream_carries_leftover():
    x = torch.randn(2, 3, 9)
    for kind, reference in (("max", F.max_pool1d), ("avg", F.avg_pool1d)):
        pool = TemporalPool(kind)
        out, leftover = [], x[..., :0]
        for chunk in x.split([3, 1, 4, 1], dim=-1):
            y, leftover = pool.stream(chunk, leftover)
            out.append(y)
        torch.testing.assert_close(torch.cat(out, -1), reference(x, 2))
        assert torch.equal(leftover, x[..., 8:])


def test_stream_errors():
    with pytest.raises(ValueError, match="causal"):
        small_head(bidirectional=True).stream(torch.randn(1, 4, 12))
    head = small_head(bidirectional=False)
    with pytest.raises(ValueError, match="empty"):
        head.stream(torch.randn(1, 0, 12))
    with pytest.raises(TypeError):
        head.stream(torch.randn(1, 4, 12), state=(1, 2))


def test_argument_and_shape_errors():
    with pytest.raises(ValueError, match="divisible"):
        ViS4mer(8, 3, embed_dim=20, depth=3)
    with pytest.raises(ValueError, match="pool"):
        ViS4mer(8, 3, embed_dim=16, pool="sum")
    with pytest.raises(ValueError, match="token_pool"):
        ViS4mer(8, 3, embed_dim=16, token_pool="cls")
    head = small_head()
    with pytest.raises(ValueError, match=r"\(B, T, 12\)"):
        head(torch.randn(2, 16, 11))
    with pytest.raises(ValueError, match="at least 4 steps"):
        head(torch.randn(2, 3, 12))


def test_training_reduces_loss():
    torch.manual_seed(0)
    head = small_head(num_classes=2)
    x = torch.randn(16, 32, 12)
    y = (x[:, :4, 0].mean(1) > 0).long()  # the answer sits in the first frames
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(head(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    head.reset_classifier(7)
    assert head(x).shape == (16, 7) and head.get_classifier().out_features == 7


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return timm.create_model("test_vit", pretrained=False, num_classes=0, img_size=32)


def test_video_classifier_applies_the_encoder_per_frame(encoder):
    torch.manual_seed(0)
    model = VideoClassifier(encoder, small_head(dim=encoder.num_features), frame_batch=5).eval()
    clips = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        per_frame = torch.stack([torch.stack([encoder(clips[b, :, t][None])[0] for t in range(8)]) for b in range(2)])
        torch.testing.assert_close(model.encode_frames(clips), per_frame, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model(clips), model.head(per_frame), rtol=1e-4, atol=1e-5)

    tokens_model = VideoClassifier(encoder, small_head(dim=encoder.num_features, token_pool="flatten"))
    with torch.no_grad():
        tokens = tokens_model.encode_frames(clips)
        assert tokens.shape == (2, 8, 5, encoder.num_features)  # class token + 4 patches
        torch.testing.assert_close(tokens[1, 3], frame_tokens(encoder, clips[1, :, 3][None])[0], rtol=1e-4, atol=1e-5)

    with pytest.raises(ValueError, match="head.dim"):
        VideoClassifier(encoder, small_head(dim=7))
    with pytest.raises(ValueError, match="B, 3, T, H, W"):
        model(torch.randn(2, 8, 3, 32, 32))


def test_video_classifier_freezing_and_streaming(encoder):
    torch.manual_seed(0)
    frozen = VideoClassifier(encoder, small_head(dim=encoder.num_features, bidirectional=False))
    frozen.train()
    assert not frozen.encoder.training and frozen.head.training
    clips = torch.randn(2, 3, 12, 32, 32)
    frozen(clips).sum().backward()
    assert all(p.grad is None for p in frozen.encoder.parameters())
    assert all(p.grad is not None for p in frozen.head.parameters())

    frozen.eval()
    with torch.no_grad():
        expected = frozen(clips)
        logits, state = frozen.stream(clips[:, :, :5])
        logits, state = frozen.stream(clips[:, :, 5:], state)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)

    trainable = VideoClassifier(timm.create_model("test_vit", num_classes=0, img_size=32),
                                small_head(dim=encoder.num_features), freeze_encoder=False)
    trainable.train()
    trainable(clips).sum().backward()
    assert trainable.encoder.training
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable.encoder.parameters())
