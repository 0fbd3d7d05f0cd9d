"""VGG-19 stacks, weight loading, the perceptual loss and the AdaIN StyleNet (Lin et al. 2023,
UniFrame): statistics, shapes, gradients and a few training steps, on tiny narrow networks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import Tensor, nn

from bench.errors import DabenchError
from bench.models.backbones import IMAGENET_MEAN, IMAGENET_STD
from bench.models.style_net import StyleNet, adain, gram_matrix
from bench.models.vgg import (
    VGG19_SLICES,
    PerceptualLoss,
    VGGFeatures,
    build_vgg19_features,
    load_vgg19,
    random_vgg19,
)

pytestmark = pytest.mark.usefixtures("one_thread")

_MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _tv_vgg19_meta() -> torchvision.models.VGG:
    # shapes and key names without allocating (or initialising) 140M parameters
    with torch.device("meta"):
        return torchvision.models.vgg19(weights=None)


def _shapes(module: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


def _conv_channels(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_channels, m.out_channels) for m in module.modules() if isinstance(m, nn.Conv2d)]


# --- AdaIN ------------------------------------------------------------------------------------


def test_adain_gives_style_statistics_and_keeps_content_pattern() -> None:
    g = torch.Generator().manual_seed(0)
    content = torch.randn(2, 4, 6, 6, generator=g) * 3.0 + 1.5
    # a different spatial size: AdaIN only reads the style's statistics
    style = torch.randn(2, 4, 9, 5, generator=g) * torch.tensor([0.5, 1, 2, 4]).view(1, 4, 1, 1)
    style = style + torch.tensor([-2.0, 0, 3, 10]).view(1, 4, 1, 1)
    out = adain(content, style)
    assert out.shape == content.shape
    flat_o, flat_s, flat_c = (x.flatten(2) for x in (out, style, content))
    assert torch.allclose(flat_o.mean(2), flat_s.mean(2), atol=1e-4)
    assert torch.allclose(flat_o.std(2), flat_s.std(2), atol=1e-4)
    # per channel, the output is an increasing affine map of the content: correlation 1
    zo = (flat_o - flat_o.mean(2, keepdim=True)) / flat_o.std(2, keepdim=True)
    zc = (flat_c - flat_c.mean(2, keepdim=True)) / flat_c.std(2, keepdim=True)
    corr = (zo * zc).sum(2) / (zo.shape[2] - 1)
    assert torch.allclose(corr, torch.ones_like(corr), atol=1e-5)
    # one style map for the whole batch broadcasts
    one = adain(content, style[:1])
    assert torch.allclose(one.flatten(2).mean(2), flat_s[:1].mean(2).expand(2, 4), atol=1e-4)
    with pytest.raises(DabenchError):
        adain(content, style[:, :3])


def test_gram_matrix_is_size_normalised() -> None:
    feat = torch.rand(1, 3, 4, 4)
    tiled = feat.repeat(1, 1, 2, 2)  # same statistics, 4× the positions
    assert torch.allclose(gram_matrix(feat), gram_matrix(tiled), atol=1e-6)
    assert torch.allclose(gram_matrix(feat)[0], feat[0].flatten(1) @ feat[0].flatten(1).T / 48)


# --- VGG stacks -------------------------------------------------------------------------------


def test_vgg19_slices_end_on_the_named_relus() -> None:
    layers = _tv_vgg19_meta().features
    starts = [start for start, _ in VGG19_SLICES.values()]
    ends = [end for _, end in VGG19_SLICES.values()]
    assert starts == [0, *ends[:-1]]  # contiguous
    for name, (_, end) in VGG19_SLICES.items():
        block = int(name[4])  # reluB_1: the first ReLU after B - 1 max-pools
        assert isinstance(layers[end - 1], nn.ReLU) and isinstance(layers[end - 2], nn.Conv2d)
        assert sum(isinstance(m, nn.MaxPool2d) for m in layers[:end]) == block - 1
        assert end - 3 < 0 or isinstance(layers[end - 3], nn.MaxPool2d)


@pytest.mark.parametrize("depth", ["relu4_1", "relu5_1"])
def test_build_vgg19_features_has_torchvision_shapes(depth: str) -> None:
    end = VGG19_SLICES[depth][1]
    reference = _tv_vgg19_meta().features[:end]
    with torch.device("meta"):
        built = build_vgg19_features(1.0, depth)
        quarter = build_vgg19_features(0.25, depth)
    assert len(built) == end
    assert _shapes(built) == _shapes(reference)
    assert [type(m) for m in built] == [type(m) for m in reference]
    full, small = _conv_channels(built), _conv_channels(quarter)
    assert [o // 4 for _, o in full] == [o for _, o in small]
    assert small[0][0] == 3  # RGB input is never scaled
    with pytest.raises(DabenchError, match="relu3_2"):
        build_vgg19_features(1.0, "relu3_2")


def test_random_vgg19_is_seeded_and_leaves_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    a = random_vgg19(0.25, "relu3_1", seed=3)
    b = random_vgg19(0.25, "relu3_1", seed=3)
    c = random_vgg19(0.25, "relu3_1", seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["0.weight"], sc["0.weight"])
    conv = a[7]  # 64 -> 64 channels at width 0.25 (relu3_1's conv: 32 -> 64)
    assert isinstance(conv, nn.Conv2d)
    fan_out = conv.out_channels * 9
    assert abs(conv.weight.std().item() / (2 / fan_out) ** 0.5 - 1) < 0.1  # Kaiming, fan_out
    assert all(not m.bias.any() for m in a if isinstance(m, nn.Conv2d))


# --- loading a local weight file --------------------------------------------------------------


@pytest.fixture(scope="module")
def tv_features() -> nn.Sequential:
    """torchvision's own VGG-19 ``features`` module (width 1), random weights."""
    features = _tv_vgg19_meta().features[:30].to_empty(device="cpu")
    features.load_state_dict(random_vgg19(1.0, "relu5_1", seed=7).state_dict())
    return features.eval()


def _feature_keys(features: nn.Sequential) -> dict[str, Tensor]:
    return {f"features.{k}": v for k, v in features.state_dict().items()}


def test_load_vgg19_reads_torchvision_and_timm_layouts(
    tv_features: nn.Sequential, tmp_path: Path
) -> None:
    timm = pytest.importorskip("timm")
    tv_keys = {k for k in _tv_vgg19_meta().state_dict() if k.startswith("features.")}
    assert set(_feature_keys(tv_features)) <= tv_keys
    x = torch.rand(1, 3, 32, 32)

    # torchvision layout: features.* plus (small stand-ins for) its classifier
    tv_file = tmp_path / "vgg19_tv.pth"
    torch.save(
        {
            **_feature_keys(tv_features),
            "classifier.0.weight": torch.zeros(2, 2),
            "classifier.6.bias": torch.zeros(2),
        },
        tv_file,
    )
    stack = random_vgg19(1.0, "relu5_1", seed=0)
    load_vgg19(stack, tv_file)
    with torch.no_grad():
        assert torch.equal(stack(x), tv_features(x))

    # timm layout, its key names taken from timm's own model (built on meta, costs nothing)
    with torch.device("meta"):
        timm_keys = list(timm.create_model("vgg19", pretrained=False).state_dict())
    extra = [k for k in timm_keys if not k.startswith("features.")]
    assert extra and all(k.startswith(("pre_logits.", "head.")) for k in extra)
    assert {k for k in timm_keys if k.startswith("features.")} == tv_keys
    timm_file = tmp_path / "vgg19_timm.pth"
    torch.save({**_feature_keys(tv_features), **{k: torch.zeros(1) for k in extra}}, timm_file)
    stack4 = build_vgg19_features(1.0, "relu4_1")  # the deeper layers in the file are ignored
    load_vgg19(stack4, timm_file)
    with torch.no_grad():
        assert torch.equal(stack4(x), tv_features[:21](x))


def test_load_vgg19_reports_bad_files(tmp_path: Path) -> None:
    good = {f"features.{k}": v for k, v in random_vgg19(1.0, "relu2_1").state_dict().items()}

    def attempt(name: str, state: dict[str, Tensor], width: float = 1.0) -> str:
        path = tmp_path / name
        torch.save(state, path)
        with pytest.raises(DabenchError) as info:
            load_vgg19(build_vgg19_features(width, "relu2_1"), path)
        assert str(path) in str(info.value)
        return str(info.value)

    wrong = {**good, "features.2.weight": torch.zeros(64, 64, 1, 1)}
    assert "mismatched" in attempt("wrong.pth", wrong) and "2.weight" in attempt("w2.pth", wrong)
    missing = {k: v for k, v in good.items() if k != "features.5.bias"}
    assert "missing" in attempt("missing.pth", missing)
    assert "unexpected" in attempt("extra.pth", {**good, "fc.weight": torch.zeros(1)})
    assert "width" in attempt("narrow.pth", good, width=0.5)
    with pytest.raises(DabenchError, match="not found"):
        load_vgg19(build_vgg19_features(1.0, "relu2_1"), tmp_path / "absent.pth")
    # the good file itself loads (the failures above are the edits, not the helper)
    torch.save(good, tmp_path / "good.pth")
    load_vgg19(build_vgg19_features(1.0, "relu2_1"), tmp_path / "good.pth")


# --- VGGFeatures and the perceptual loss ------------------------------------------------------


def test_vgg_features_slices_normalisation_and_freezing() -> None:
    feats = VGGFeatures(random_vgg19(0.125, "relu5_1", seed=0))
    x = torch.rand(2, 3, 32, 32)
    out = feats(x)
    assert [tuple(o.shape[1:]) for o in out] == [
        (8, 32, 32),
        (16, 16, 16),
        (32, 8, 8),
        (64, 4, 4),
        (64, 2, 2),
    ]
    assert len(VGGFeatures(random_vgg19(0.125, "relu4_1"))(x)) == 4
    # the ImageNet normalisation happens inside; normalized_input skips it
    pre = VGGFeatures(random_vgg19(0.125, "relu5_1", seed=0), normalized_input=True)
    for a, b in zip(out, pre((x - _MEAN) / _STD), strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(out[0], pre(x)[0])
    feats.train()
    assert not feats.training and not any(p.requires_grad for p in feats.parameters())


@pytest.fixture(scope="module")
def perceptual() -> PerceptualLoss:
    return PerceptualLoss(VGGFeatures(random_vgg19(0.125, "relu5_1", seed=0)))


def test_perceptual_loss_values_and_gradients(perceptual: PerceptualLoss) -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    assert perceptual(a, a.clone()).item() == 0.0
    assert perceptual(a, b).item() > 0 and perceptual(b, a).item() > 0
    pred, target = a.clone().requires_grad_(), b.clone().requires_grad_()
    perceptual(pred, target).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert target.grad is None
    assert not any(p.grad is not None for p in perceptual.parameters())


def test_perceptual_loss_formula_and_scale_rule(perceptual: PerceptualLoss) -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(1, 3, 32, 32, generator=g), torch.rand(1, 3, 32, 32, generator=g)
    feats = perceptual.features
    only_first = PerceptualLoss(feats, scales=(1.0,), weights=(1, 0, 0, 0, 0))
    expected = (feats(a)[0] - feats(b)[0]).abs().mean()
    assert torch.allclose(only_first(a, b), expected)
    full = PerceptualLoss(feats, scales=(1.0,))
    manual = sum(10 * (p - t).abs().mean() for p, t in zip(feats(a), feats(b), strict=True))
    assert torch.allclose(full(a, b), manual)
    # scales add up; 32 px uses 1 and 1/2 (relu5_1 needs ≥ 16 px), 256 px all four
    assert perceptual.used_scales(32, 32) == (1.0, 0.5)
    assert perceptual.used_scales(64, 48) == (1.0, 0.5)
    assert perceptual.used_scales(64, 64) == (1.0, 0.5, 0.25)
    assert perceptual.used_scales(256, 256) == (1.0, 0.5, 0.25, 0.125)
    # the pyramid low-passes before subsampling: noise averages out at 1/4 (a plain bilinear
    # resize, which reads 2×2 pixels per output, keeps a std near 0.29 / 2)
    noise = torch.rand(1, 3, 64, 64, generator=g)
    levels = perceptual.pyramid(noise)
    assert [lv.shape[-1] for lv in levels] == [64, 32, 16] and levels[0] is noise
    assert levels[2].std() < 0.1 and abs(levels[2].mean() - 0.5) < 0.05
    half = PerceptualLoss(feats, scales=(0.5,))
    assert torch.allclose(perceptual(a, b), full(a, b) + half(a, b))
    assert half(a, b) > 0
    with pytest.raises(DabenchError, match="smaller"):
        perceptual(a[..., :8, :8], b[..., :8, :8])
    with pytest.raises(DabenchError):
        PerceptualLoss(VGGFeatures(random_vgg19(0.125, "relu4_1")), weights=(1, 1))


# --- StyleNet ---------------------------------------------------------------------------------


def _norm(x: Tensor) -> Tensor:
    return (x - _MEAN) / _STD


def test_style_net_decoder_mirrors_encoder() -> None:
    full = StyleNet(random_vgg19(1.0, "relu4_1"))
    # Huang & Belongie's / UniFrame's decoder, conv for conv
    assert _conv_channels(full.decoder) == [
        (512, 256),
        (256, 256),
        (256, 256),
        (256, 256),
        (256, 128),
        (128, 128),
        (128, 64),
        (64, 64),
        (64, 3),
    ]
    assert sum(isinstance(m, nn.Upsample) for m in full.decoder) == 3
    assert sum(isinstance(m, nn.ReLU) for m in full.decoder) == 8
    assert sum(isinstance(m, nn.ReflectionPad2d) for m in full.decoder) == 9
    assert isinstance(full.decoder[-1], nn.Conv2d)  # no activation on the output
    small = StyleNet(random_vgg19(0.125, "relu5_1"))  # a deeper stack is cut at relu4_1
    assert _conv_channels(small.decoder)[0] == (64, 32)
    assert _conv_channels(small.decoder)[-1] == (8, 3)
    with pytest.raises(DabenchError):
        StyleNet(random_vgg19(0.125, "relu3_1"))


@pytest.fixture(scope="module")
def style_net() -> StyleNet:
    torch.manual_seed(0)
    return StyleNet(random_vgg19(0.125, "relu4_1", seed=0))


@pytest.mark.parametrize("kind", ["gram", "mean_std"])
def test_style_net_losses_train_only_the_decoder(kind: str) -> None:
    torch.manual_seed(0)
    net = StyleNet(random_vgg19(0.125, "relu4_1", seed=0), style_loss=kind)  # type: ignore[arg-type]
    content = _norm(torch.rand(2, 3, 32, 32))
    style = _norm(torch.rand(2, 3, 24, 40))  # another size
    losses = net.losses(content, style)
    assert set(losses) == {"content", "style"}
    assert all(v.ndim == 0 and torch.isfinite(v) and v > 0 for v in losses.values())
    (losses["content"] + 0.1 * losses["style"]).backward()
    assert all(p.grad is None for p in net.encoder.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.decoder.parameters())


def test_style_net_losses_and_stylize_match_their_definitions() -> None:
    torch.manual_seed(0)
    stack = random_vgg19(0.125, "relu4_1", seed=5)
    gram_net = StyleNet(stack)
    moments_net = StyleNet(stack, style_loss="mean_std")
    moments_net.decoder.load_state_dict(gram_net.decoder.state_dict())
    g = torch.Generator().manual_seed(3)
    content = _norm(torch.rand(2, 3, 32, 32, generator=g))
    style = _norm(torch.rand(2, 3, 16, 16, generator=g))

    # the encoder reads normalised images as they are: the raw torchvision stack on them
    def encode(x: Tensor) -> list[Tensor]:
        return [stack[:end](x) for _, end in list(VGG19_SLICES.values())[:4]]

    def moments(f: Tensor) -> tuple[Tensor, Tensor]:
        flat = f.flatten(2)
        return flat.mean(2), (flat.var(2) + 1e-5).sqrt()

    mse = torch.nn.functional.mse_loss
    with torch.no_grad():
        s_feats = encode(style)
        t = adain(encode(content)[-1], s_feats[-1])
        decoded = gram_net.decoder(t)
        o_feats = encode(decoded)
        got = gram_net.losses(content, style)
        assert torch.allclose(got["content"], mse(o_feats[-1], t), rtol=1e-4)
        style_gram = sum(
            mse(gram_matrix(o), gram_matrix(s)) for o, s in zip(o_feats, s_feats, strict=True)
        )
        assert torch.allclose(got["style"], style_gram, rtol=1e-4)
        got_m = moments_net.losses(content, style)
        assert torch.allclose(got_m["content"], got["content"])
        style_m = sum(
            mse(moments(o)[0], moments(s)[0]) + mse(moments(o)[1], moments(s)[1])
            for o, s in zip(o_feats, s_feats, strict=True)
        )
        assert torch.allclose(got_m["style"], style_m, rtol=1e-4)
        # stylize: t = α·AdaIN + (1 − α)·f_c, decoded and clamped per channel
        f_c = encode(content)[-1]
        mixed = gram_net.decoder(0.3 * t + 0.7 * f_c)
        low, high = (0 - _MEAN) / _STD, (1 - _MEAN) / _STD
        expected = torch.maximum(torch.minimum(mixed, high), low)
        assert torch.allclose(gram_net.stylize(content, style, 0.3), expected, atol=1e-5)
        # a decoder pushed far out of range is clamped to exactly the [0, 1] image bounds
        gram_net.decoder[-1].bias.copy_(torch.tensor([50.0, -50.0, 50.0]))
        out = gram_net.stylize(content, style)
        assert torch.allclose(out[:, 0], high[:, 0].expand_as(out[:, 0]), atol=1e-6, rtol=0)
        assert torch.allclose(out[:, 1], low[:, 1].expand_as(out[:, 1]), atol=1e-6, rtol=0)


def test_stylize_shape_range_and_alpha(style_net: StyleNet) -> None:
    g = torch.Generator().manual_seed(2)
    content = _norm(torch.rand(2, 3, 32, 32, generator=g))
    style = _norm(torch.rand(2, 3, 16, 24, generator=g))
    other = _norm(torch.rand(2, 3, 32, 32, generator=g))
    with torch.no_grad():
        out = style_net.stylize(content, style, 0.7)
        assert out.shape == content.shape
        assert bool((out >= style_net.low).all() and (out <= style_net.high).all())
        # α = 0 decodes the content's own features: the style does not matter
        assert torch.equal(
            style_net.stylize(content, style, 0.0), style_net.stylize(content, other, 0)
        )
        assert not torch.allclose(
            style_net.stylize(content, style, 1.0), style_net.stylize(content, other, 1.0)
        )
        # per-sample α [B] broadcasts
        mixed = style_net.stylize(content, style, torch.tensor([0.0, 1.0]))
        assert torch.allclose(mixed[:1], style_net.stylize(content[:1], style[:1], 0.0), atol=1e-5)
        assert torch.allclose(mixed[1:], style_net.stylize(content[1:], style[1:], 1.0), atol=1e-5)
    with pytest.raises(DabenchError):
        style_net.stylize(content, style, 1.5)
    with pytest.raises(DabenchError):
        style_net.stylize(content, style, torch.zeros(3))
    with pytest.raises(DabenchError, match="divisible by 8"):
        style_net.stylize(content[..., :30, :30], style)


def test_style_net_training_lowers_the_loss() -> None:
    torch.manual_seed(0)
    net = StyleNet(random_vgg19(0.125, "relu4_1", seed=0))
    content = _norm(torch.rand(4, 3, 32, 32))
    style = _norm(torch.rand(4, 3, 32, 32) * 0.5 + 0.5)
    opt = torch.optim.Adam(net.decoder.parameters(), lr=1e-3)

    def total() -> Tensor:
        losses = net.losses(content, style)
        return losses["content"] + 0.1 * losses["style"]

    first = total().item()
    for _ in range(15):
        opt.zero_grad()
        total().backward()
        opt.step()
    with torch.no_grad():
        assert total().item() < 0.7 * first
