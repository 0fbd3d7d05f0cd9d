"""Backbones, heads, heatmaps, lifting, PoseNet: shapes, round trips, known values, offline."""

from __future__ import annotations

import socket

import pytest
import timm
import timm.models._builder
import timm.models._hub
import torch
from timm.layers import resample_abs_pos_embed
from torch import Tensor, nn

from bench.errors import DabenchError
from bench.models.backbones import BACKBONES, create_backbone, normalize_images
from bench.models.heads import DeconvHead, Head25D, VolumetricHead, num_deconv_for
from bench.models.heatmaps import (
    argmax_2d,
    gaussian_targets,
    heatmap_to_image,
    image_to_heatmap,
    soft_argmax_2d,
    soft_argmax_3d,
    soft_argmax_3d_marginal,
)
from bench.models.lifting import backproject, lift_25d, root_depth_from_bone
from bench.models.pose_net import ModelConfig, PoseNet

EXPECTED = {  # name: (channels, stride at patch 8 for ViTs)
    "resnet18": (512, 32),
    "resnet50": (2048, 32),
    "resnet101": (2048, 32),
    "vit_tiny": (192, 8),
    "vit_small": (384, 8),
    "vit_base": (768, 8),
    "hrnet_w32": (32, 4),
    "resnet10t": (512, 32),
    "regnetx_002": (368, 32),
    "mobilenetv3_small_100": (576, 32),
}


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to fetch weights or open a connection fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    for module, names in (
        (
            timm.models._builder,
            ("load_pretrained", "load_state_dict_from_url", "load_state_dict_from_hf"),
        ),
        (timm.models._builder, ("download_cached_file",)),
        (timm.models._hub, ("download_cached_file", "hf_hub_download", "load_state_dict_from_hf")),
        (torch.hub, ("load_state_dict_from_url", "download_url_to_file")),
    ):
        for name in names:
            monkeypatch.setattr(module, name, refuse)


def small_backbone(name: str, img_size: int = 64, **kwargs: object):
    patch = 8 if name.startswith("vit") else None
    return create_backbone(name, img_size=img_size, patch_size=patch, **kwargs)


def test_network_guard_is_active() -> None:
    with pytest.raises(AssertionError, match="network"):
        timm.create_model("resnet18", pretrained=True)


# ---------------------------------------------------------------- backbones


@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_builds_offline_with_advertised_shape(name: str) -> None:
    torch.manual_seed(0)
    b = small_backbone(name)
    channels, stride = EXPECTED[name]
    assert (b.out_channels, b.stride, b.name) == (channels, stride, name)
    assert b.is_vit == name.startswith("vit")
    feat = b(torch.randn(2, 3, 64, 64))
    assert feat.shape == (2, channels, 64 // stride, 64 // stride)
    assert b.pool(feat).shape == (2, channels)


def test_vit_default_patch_and_pool_excludes_class_token() -> None:
    b = create_backbone("vit_tiny", img_size=64)
    assert b.stride == 16
    x = torch.randn(2, 3, 64, 64)
    feat = b(x)
    assert feat.shape == (2, 192, 4, 4)
    tokens = b.model.forward_features(x)
    patch_tokens = tokens[:, b.model.num_prefix_tokens :]
    assert torch.allclose(b.pool(feat), patch_tokens.mean(dim=1), atol=1e-6)
    # token i is grid cell (i // 4, i % 4): row-major, as the patches were cut
    assert torch.allclose(feat[:, :, 1, 2], patch_tokens[:, 1 * 4 + 2], atol=1e-6)
    assert not torch.allclose(b.pool(feat), tokens.mean(dim=1), atol=1e-4)


def test_hrnet_feature_is_stride4_branch_and_every_parameter_trains() -> None:
    torch.manual_seed(0)
    b = small_backbone("hrnet_w32").eval()
    full = timm.create_model(
        "hrnet_w32", pretrained=False, features_only=True, feature_location="", out_indices=(1,)
    ).eval()
    result = full.load_state_dict(b.model.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(".fuse_layers." in k for k in result.missing_keys)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(b(x), full(x)[0], atol=1e-5)
    b.train()
    b(torch.randn(2, 3, 64, 64)).square().mean().backward()
    assert all(p.grad is not None for p in b.parameters())


def test_backbone_input_errors() -> None:
    with pytest.raises(DabenchError, match="resnet18, resnet50"):
        create_backbone("resnet34", img_size=64)
    with pytest.raises(DabenchError, match="multiple of 32"):
        create_backbone("resnet18", img_size=48)
    with pytest.raises(DabenchError, match="multiple of 32"):
        create_backbone("hrnet_w32", img_size=80)
    with pytest.raises(DabenchError, match="patch_size 12"):
        create_backbone("vit_tiny", img_size=64, patch_size=12)
    with pytest.raises(DabenchError, match="ViT"):
        create_backbone("resnet18", img_size=64, patch_size=16)
    vit = create_backbone("vit_tiny", img_size=64)
    with pytest.raises(DabenchError, match="64×64"):
        vit(torch.randn(1, 3, 96, 96))


def test_normalize_images_layout_and_values() -> None:
    images = torch.zeros(2, 4, 5, 3, dtype=torch.uint8)
    images[..., 0] = 255
    images[1, 2, 3] = torch.tensor([10, 20, 30], dtype=torch.uint8)
    x = normalize_images(images)
    assert x.dtype == torch.float32 and x.shape == (2, 3, 4, 5)
    mean = torch.tensor([0.485, 0.456, 0.406])
    std = torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(x[0, :, 0, 0], (torch.tensor([1.0, 0, 0]) - mean) / std)
    assert torch.allclose(x[1, :, 2, 3], (torch.tensor([10, 20, 30]) / 255 - mean) / std)
    with pytest.raises(DabenchError, match="uint8"):
        normalize_images(images.float())


# ---------------------------------------------------------------- weights


def outputs(backbone, x: Tensor) -> Tensor:
    with torch.no_grad():
        return backbone.eval()(x)


def assert_same_backbone(loaded, reference, x: Tensor) -> None:
    """Identical weights and buffers, and outputs equal to a tight tolerance: two instances
    of one model may differ in the last bits on some CPUs (oneDNN picks kernels by memory
    alignment), so outputs of two instances are never compared bitwise."""
    ours, theirs = loaded.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    for key, value in ours.items():
        assert torch.equal(value, theirs[key]), key
    torch.testing.assert_close(outputs(loaded, x), outputs(reference, x), rtol=1e-5, atol=1e-5)


def test_weights_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    src = small_backbone("resnet18")
    # non-trivial BN statistics, so a loader that skipped buffers would be caught
    src.train()(torch.randn(4, 3, 64, 64) * 3 + 1)
    path = tmp_path / "r18.pt"
    torch.save(src.state_dict(), path)
    x = torch.randn(2, 3, 64, 64)
    assert not torch.allclose(outputs(small_backbone("resnet18"), x), outputs(src, x))
    loaded = small_backbone("resnet18", weights=path)
    assert_same_backbone(loaded, src, x)


@pytest.mark.parametrize("wrap", ["state_dict", "model", "module_timm", "posenet"])
def test_prefixed_checkpoints_load(tmp_path, wrap: str) -> None:
    torch.manual_seed(1)
    net = PoseNet(ModelConfig(backbone="resnet18"), num_joints=5)
    src = net.backbone
    if wrap == "state_dict":
        ckpt = {"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}, "epoch": 3}
    elif wrap == "model":
        ckpt = {"model": {f"backbone.{k}": v for k, v in src.state_dict().items()}}
    elif wrap == "module_timm":
        ckpt = {f"module.{k}": v for k, v in src.model.state_dict().items()}
    else:
        ckpt = {"state_dict": net.state_dict()}  # backbone.* and head.* keys
    path = tmp_path / "ckpt.pth"
    torch.save(ckpt, path)
    x = torch.randn(2, 3, 64, 64)
    assert_same_backbone(small_backbone("resnet18", weights=path), src, x)


def test_imagenet_classifier_keys_are_ignored(tmp_path) -> None:
    torch.manual_seed(2)
    classifier = timm.create_model("resnet18", pretrained=False, num_classes=1000).eval()
    path = tmp_path / "imagenet.pth"
    torch.save(classifier.state_dict(), path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = classifier.forward_features(x)
    loaded = small_backbone("resnet18", weights=path)
    weights = classifier.state_dict()
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, weights[key]), key
    torch.testing.assert_close(outputs(loaded, x), expected, rtol=1e-5, atol=1e-5)


def test_weight_file_errors_name_the_file(tmp_path) -> None:
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(DabenchError, match="nowhere.pt"):
        small_backbone("resnet18", weights=missing)

    wrong = tmp_path / "r18_for_r50.pt"
    torch.save(small_backbone("resnet18").state_dict(), wrong)
    with pytest.raises(DabenchError, match=r"r18_for_r50\.pt.*resnet50.*missing") as err:
        small_backbone("resnet50", weights=wrong)
    assert "mismatched" in str(err.value) and "\n" not in str(err.value)

    garbage = tmp_path / "notes.pt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(DabenchError, match="notes.pt"):
        small_backbone("resnet18", weights=garbage)

    vit_for_resnet = tmp_path / "vit.pt"
    torch.save(small_backbone("vit_tiny").state_dict(), vit_for_resnet)
    with pytest.raises(DabenchError, match="unexpected"):
        small_backbone("resnet18", weights=vit_for_resnet)


def test_vit_weights_resample_position_grid(tmp_path) -> None:
    torch.manual_seed(3)
    src = create_backbone("vit_tiny", img_size=64, patch_size=16)  # 4×4 grid
    path = tmp_path / "vit64.pt"
    torch.save(src.state_dict(), path)
    dst = create_backbone("vit_tiny", img_size=96, patch_size=16, weights=path)  # 6×6 grid
    pos = dst.model.pos_embed
    assert pos.shape == (1, 1 + 36, 192)
    expected = resample_abs_pos_embed(
        src.model.pos_embed.detach(), new_size=[6, 6], old_size=[4, 4], num_prefix_tokens=1
    )
    assert torch.allclose(pos, expected)
    assert torch.equal(pos[:, :1], src.model.pos_embed[:, :1])  # class token untouched
    assert torch.equal(dst.model.blocks[0].attn.qkv.weight, src.model.blocks[0].attn.qkv.weight)
    assert dst(torch.randn(1, 3, 96, 96)).shape == (1, 192, 6, 6)


# ---------------------------------------------------------------- heads


def test_head_shapes() -> None:
    feat = torch.randn(2, 512, 2, 2)
    out = Head25D(512, 21, num_deconv=3, channels=64)(feat)
    assert set(out) == {"heatmaps", "depth"}
    assert out["heatmaps"].shape == out["depth"].shape == (2, 21, 16, 16)
    vol = VolumetricHead(512, 21, depth_bins=8, num_deconv=2, channels=64)(feat)["volumes"]
    assert vol.shape == (2, 21, 8, 8, 8)
    assert DeconvHead(32, 7, num_deconv=0)(torch.randn(1, 32, 16, 16)).shape == (1, 7, 16, 16)


def test_deconv_head_layers_and_init() -> None:
    torch.manual_seed(0)
    head = DeconvHead(512, 21, num_deconv=3, channels=256)
    kinds = [type(m) for m in head.deconv]
    assert kinds == [nn.ConvTranspose2d, nn.BatchNorm2d, nn.ReLU] * 3
    deconv = head.deconv[0]
    assert (deconv.kernel_size, deconv.stride, deconv.padding) == ((4, 4), (2, 2), (1, 1))
    assert deconv.bias is None and head.final.bias is not None
    assert head.final.kernel_size == (1, 1)
    assert abs(deconv.weight.std().item() - 0.001) < 1e-4
    assert abs(head.final.weight.std().item() - 0.001) < 2e-4
    assert torch.all(head.final.bias == 0)
    assert torch.all(head.deconv[1].weight == 1) and torch.all(head.deconv[1].bias == 0)


def test_num_deconv_for() -> None:
    assert num_deconv_for(32, 4) == 3
    assert num_deconv_for(16, 4) == 2
    assert num_deconv_for(8, 4) == 1
    assert num_deconv_for(4, 4) == 0
    for bad in [(24, 4), (4, 8), (32, 3), (0, 4)]:
        with pytest.raises(DabenchError):
            num_deconv_for(*bad)


# ---------------------------------------------------------------- heatmaps


def test_image_heatmap_mapping() -> None:
    assert heatmap_to_image(torch.tensor(0.0), 4).item() == 1.5  # (stride - 1) / 2
    assert heatmap_to_image(torch.tensor(0.0), 8).item() == 3.5
    assert image_to_heatmap(torch.tensor(1.5), 4).item() == 0.0
    # the image's edges map to the heatmap's edges: [-0.5, W - 0.5) -> [-0.5, w - 0.5)
    assert image_to_heatmap(torch.tensor([-0.5, 63.5]), 4).tolist() == [-0.5, 15.5]
    xy = torch.randn(3, 21, 2) * 30 + 32
    assert torch.allclose(heatmap_to_image(image_to_heatmap(xy, 4), 4), xy, atol=1e-5)


def test_gaussian_targets_peak_and_weights() -> None:
    h, w = 12, 16  # non-square so a swapped axis cannot pass
    centres = torch.tensor([[[5.0, 7.0], [9.3, 2.6], [4.0, 4.0], [60.0, 3.0], [float("nan"), 1]]])
    vis = torch.tensor([[True, True, False, True, True]])
    targets, weights = gaussian_targets(centres, vis, (h, w), sigma=2.0)
    assert targets.shape == (1, 5, h, w)
    assert weights.tolist() == [[1.0, 1.0, 0.0, 0.0, 0.0]]
    assert targets[0, 0, 7, 5].item() == 1.0
    for k, (x, y) in [(0, (5, 7)), (1, (9, 3))]:
        flat = targets[0, k].argmax().item()
        assert (flat % w, flat // w) == (x, y)
    assert targets[0, 1].max() < 1.0
    assert torch.allclose(targets[0, 0, 7, 6], torch.exp(torch.tensor(-1 / 8)))
    assert torch.all(targets[0, 2:] == 0)  # invisible, far outside, NaN: empty maps
    # partly outside but within 3σ: still supervised
    _, w_edge = gaussian_targets(torch.tensor([[[-4.0, 5.0]]]), torch.ones(1, 1), (h, w))
    assert w_edge.item() == 1.0


def test_soft_argmax_2d_peak_and_gradient() -> None:
    logits = torch.zeros(2, 3, 12, 16)
    peaks = [(3, 9), (15, 0), (7, 11)]
    for k, (x, y) in enumerate(peaks):
        logits[:, k, y, x] = 1000.0
    xy, probs = soft_argmax_2d(logits)
    assert xy.shape == (2, 3, 2) and probs.shape == (2, 3, 12, 16)
    assert torch.allclose(probs.sum(dim=(-2, -1)), torch.ones(2, 3))
    assert torch.equal(xy[0], torch.tensor(peaks, dtype=torch.float32))
    uniform, _ = soft_argmax_2d(torch.zeros(1, 1, 12, 16))
    assert torch.allclose(uniform, torch.tensor([[[7.5, 5.5]]]))

    leaf = torch.randn(2, 3, 12, 16, requires_grad=True)
    xy, _ = soft_argmax_2d(leaf, beta=2.0)
    xy.sum().backward()
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0


def test_soft_argmax_3d_peak_and_gradient() -> None:
    vol = torch.zeros(1, 2, 6, 8, 10)
    vol[0, 0, 4, 2, 7] = 1000.0  # z=4, y=2, x=7
    vol[0, 1, 0, 7, 0] = 1000.0
    xyz = soft_argmax_3d(vol)
    assert torch.equal(xyz[0], torch.tensor([[7.0, 2.0, 4.0], [0.0, 7.0, 0.0]]))
    leaf = torch.randn(1, 2, 6, 8, 10, requires_grad=True)
    soft_argmax_3d(leaf)[..., 2].sum().backward()
    assert leaf.grad is not None and leaf.grad.abs().sum() > 0


def test_soft_argmax_3d_backward_is_the_softmax_graph_gradient() -> None:
    """The hand-written backward against autograd through softmax and sums, both outputs."""
    torch.manual_seed(0)
    vol = (3 * torch.randn(2, 3, 4, 5, 6, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(soft_argmax_3d_marginal, (vol,))
    probs = torch.softmax(vol.flatten(-3), -1).view_as(vol)
    xs, ys, zs = (torch.arange(n, dtype=vol.dtype) for n in (6, 5, 4))
    ref_xyz = torch.stack(
        [
            (probs.sum((-3, -2)) * xs).sum(-1),
            (probs.sum((-3, -1)) * ys).sum(-1),
            (probs.sum((-2, -1)) * zs).sum(-1),
        ],
        -1,
    )
    xyz, probs_xy = soft_argmax_3d_marginal(vol)
    torch.testing.assert_close(xyz, ref_xyz)
    torch.testing.assert_close(probs_xy, probs.sum(-3))
    weights = torch.randn_like(ref_xyz), torch.randn_like(probs_xy)
    ref_grad = torch.autograd.grad(
        (ref_xyz * weights[0]).sum() + (probs.sum(-3) * weights[1]).sum(), vol
    )[0]
    grad = torch.autograd.grad((xyz * weights[0]).sum() + (probs_xy * weights[1]).sum(), vol)[0]
    torch.testing.assert_close(grad, ref_grad)


def test_volumetric_heatmap_loss_is_the_kl_of_the_depth_marginal() -> None:
    torch.manual_seed(1)
    config = ModelConfig(backbone="regnetx_002", head="volumetric", depth_bins=4, heatmap_loss=1.0)
    net = PoseNet(config, 21)
    out = net.head_outputs(torch.randn(2, net.feature_channels, 2, 2))
    kp2d, _, vis = random_labels(2, 21, seed=3)
    marginal = torch.log_softmax(torch.logsumexp(out["volumes"], dim=2).flatten(-2), -1)
    xy_hm = image_to_heatmap(kp2d, config.heatmap_stride)
    target, weight = gaussian_targets(xy_hm, vis, (16, 16), config.heatmap_sigma)
    total = target.flatten(-2).sum(-1, keepdim=True)
    weight = weight * (total[..., 0] > 0)  # a joint off the heatmap has no target
    target = target.flatten(-2) / total.clamp_min(1e-12)
    kl = (target * (target.clamp_min(1e-12).log() - marginal)).sum(-1)
    expected = (kl * weight).sum() / weight.sum()
    assert weight.sum() > 20
    torch.testing.assert_close(net._heatmap_kl(out, kp2d, vis), expected)


def test_argmax_2d_refinement_helps_off_grid() -> None:
    true = torch.tensor([[[5.3, 7.8], [10.0, 4.0]]])
    maps, _ = gaussian_targets(true, torch.ones(1, 2), (12, 16), sigma=2.0)
    coarse = argmax_2d(maps, refine=False)
    fine = argmax_2d(maps, refine=True)
    assert torch.equal(coarse[0, 0], torch.tensor([5.0, 8.0]))
    assert torch.equal(fine[0, 0], torch.tensor([5.25, 7.75]))
    assert (fine[0, 0] - true[0, 0]).norm() < (coarse[0, 0] - true[0, 0]).norm()
    assert torch.equal(fine[0, 1], torch.tensor([10.0, 4.0]))  # on the grid: no shift
    edge = torch.zeros(1, 1, 4, 4)
    edge[0, 0, 0, 0], edge[0, 0, 0, 1] = 1.0, 0.5
    assert torch.equal(argmax_2d(edge)[0, 0], torch.tensor([0.0, 0.0]))  # no neighbour pair


# ---------------------------------------------------------------- lifting

INTRINSICS = torch.tensor([[520.0, 0.0, 31.5], [0.0, 480.0, 29.0], [0.0, 0.0, 1.0]])


def project(points: Tensor, intrinsics: Tensor) -> Tensor:
    hom = points @ intrinsics.transpose(-1, -2)
    return hom[..., :2] / hom[..., 2:3]


def skeletons(batch: int, joints: int = 21, seed: int = 0) -> Tensor:
    """Hands of ~±80 mm around a root 400–900 mm in front of the camera, off-axis."""
    g = torch.Generator().manual_seed(seed)
    root = torch.stack(
        [
            torch.empty(batch).uniform_(-100, 100, generator=g),
            torch.empty(batch).uniform_(-100, 100, generator=g),
            torch.empty(batch).uniform_(400, 900, generator=g),
        ],
        dim=-1,
    )
    offsets = torch.randn(batch, joints, 3, generator=g) * 40
    offsets[:, 0] = 0
    return (root[:, None] + offsets).double()


def test_backproject_inverts_projection() -> None:
    points = skeletons(8)
    k = INTRINSICS.double().expand(8, 3, 3)
    recovered = backproject(project(points, k), points[..., 2], k)
    assert torch.allclose(recovered, points, atol=1e-9)


def test_lift_25d_with_true_root_depth() -> None:
    points = skeletons(8, seed=1)
    k = INTRINSICS.double().expand(8, 3, 3)
    rel = points[..., 2] - points[..., :1, 2]
    lifted = lift_25d(project(points, k), rel, points[:, 0, 2], k)
    assert torch.allclose(lifted, points, atol=1e-9)


def test_root_depth_from_bone_recovers_truth() -> None:
    points = skeletons(16, seed=2)
    k = INTRINSICS.double().expand(16, 3, 3)
    kp2d = project(points, k)
    rel = points[..., 2] - points[..., :1, 2]
    for bone in [(0, 5), (5, 6)]:
        length = (points[:, bone[0]] - points[:, bone[1]]).norm(dim=-1)
        root = root_depth_from_bone(kp2d, rel, k, bone, length)
        assert torch.allclose(root, points[:, 0, 2], rtol=1e-6)
    # scalar length, broadcast over the batch
    scaled = points[:1] * 1.0
    length = (scaled[0, 0] - scaled[0, 9]).norm().item()
    root = root_depth_from_bone(project(scaled, k[:1]), rel[:1], k[:1], (0, 9), length)
    assert torch.allclose(root, scaled[:, 0, 2], rtol=1e-6)
    # the full lift then reproduces the skeleton
    lifted = lift_25d(
        kp2d,
        rel,
        root_depth_from_bone(kp2d, rel, k, (0, 5), (points[:, 0] - points[:, 5]).norm(dim=-1)),
        k,
    )
    assert torch.allclose(lifted, points, atol=1e-6)


# ---------------------------------------------------------------- PoseNet


def random_labels(batch: int, joints: int, img: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    kp2d = torch.rand(batch, joints, 2, generator=g) * (img - 16) + 8
    kp3d = torch.randn(batch, joints, 3, generator=g) * 60
    kp3d[..., 2] += 600
    vis = torch.rand(batch, joints, generator=g) > 0.2
    return kp2d, kp3d, vis


def test_targets_and_decode_agree() -> None:
    net = PoseNet(ModelConfig(backbone="resnet18", img_size=64, depth_range_mm=400.0), 21)
    kp2d, kp3d, _ = random_labels(4, 21)
    targets = net.targets(kp2d, kp3d, root=0)
    assert targets.shape == (4, 21, 3)
    edges = net.targets(torch.tensor([[[-0.5, 63.5]]]), torch.zeros(1, 1, 3), root=0)
    assert edges[0, 0, :2].tolist() == [0.0, 1.0]  # the crop's extent is [0, 1)
    assert torch.allclose(targets[..., 2], (kp3d[..., 2] - kp3d[..., :1, 2]) / 400.0)
    pred = net.decode({"coords": targets}, root=0)
    assert torch.allclose(pred.kp2d, kp2d, atol=1e-4)
    assert torch.allclose(pred.rel_depth, kp3d[..., 2] - kp3d[..., :1, 2], atol=1e-3)
    assert torch.equal(pred.rel_depth[:, 0], torch.zeros(4))
    with pytest.raises(DabenchError, match="root"):
        net.decode({"coords": targets}, root=21)


class FixedHead(nn.Module):
    def __init__(self, out: dict[str, Tensor]) -> None:
        super().__init__()
        self.out = out

    def forward(self, feat: Tensor) -> dict[str, Tensor]:
        return self.out


def test_forward_coords_decode_to_heatmap_cell_centres() -> None:
    """A peaked head output decodes to the image px of that heatmap cell, in both heads."""
    images = torch.zeros(1, 64, 64, 3, dtype=torch.uint8)
    cells = [(0, 0), (15, 3), (6, 11)]  # (x, y) on the 16×16 heatmap, stride 4

    net = PoseNet(ModelConfig(head="2.5d"), 3)
    heatmaps = torch.zeros(1, 3, 16, 16)
    for k, (x, y) in enumerate(cells):
        heatmaps[0, k, y, x] = 1000.0
    depth = torch.tensor([0.1, 0.3, -0.2]).view(1, 3, 1, 1).expand(1, 3, 16, 16)
    net.head = FixedHead({"heatmaps": heatmaps, "depth": depth})
    pred = net.decode(net(images), root=0)
    expected_px = heatmap_to_image(torch.tensor(cells, dtype=torch.float32), 4)
    assert torch.allclose(pred.kp2d[0], expected_px, atol=1e-4)
    assert torch.allclose(pred.rel_depth[0], torch.tensor([0.0, 80.0, -120.0]), atol=1e-3)

    net = PoseNet(ModelConfig(head="volumetric", depth_bins=8), 3)
    volumes = torch.zeros(1, 3, 8, 16, 16)
    for k, ((x, y), z) in enumerate(zip(cells, [4, 7, 0], strict=True)):
        volumes[0, k, z, y, x] = 1000.0
    net.head = FixedHead({"volumes": volumes})
    out = net(images)
    pred = net.decode(out, root=0)
    assert torch.allclose(pred.kp2d[0], expected_px, atol=1e-4)
    # bin centres: z = (i + 0.5) / 8 − 0.5 of the 400 mm range → 25 mm + 50 mm·(i − 4)
    assert torch.allclose(out["coords"][0, :, 2], torch.tensor([0.0625, 0.4375, -0.4375]))
    assert torch.allclose(pred.rel_depth[0], torch.tensor([0.0, 150.0, -200.0]), atol=1e-3)


@pytest.mark.parametrize(
    ("config", "feat", "maps"),
    [
        (ModelConfig(backbone="resnet18", head="2.5d"), (256, 2), {"heatmaps", "depth"}),
        (ModelConfig(backbone="resnet18", neck=0), (512, 2), {"heatmaps", "depth"}),
        (ModelConfig(backbone="vit_tiny", patch_size=8, neck=48), (48, 8), {"heatmaps", "depth"}),
        (
            ModelConfig(backbone="vit_tiny", head="volumetric", depth_bins=4),
            (256, 4),
            {"volumes", "probs_xy"},
        ),
        (ModelConfig(backbone="hrnet_w32", head="2.5d", neck=0), (32, 16), {"heatmaps", "depth"}),
    ],
)
def test_posenet_output_shapes(config: ModelConfig, feat: tuple[int, int], maps: set) -> None:
    net = PoseNet(config, 21)
    images = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    out = net(images)
    assert set(out) == {"feat", "pooled", "coords"} | maps
    c, s = feat
    assert net.feature_channels == c
    assert out["feat"].shape == (2, c, s, s) and out["pooled"].shape == (2, c)
    # the head reads the neck: "feat" is what features() returns, and the head's input
    assert torch.allclose(out["feat"], net.features(images))
    assert out["coords"].shape == (2, 21, 3)
    for key in maps:
        assert out[key].shape[:2] == (2, 21) and out[key].shape[-2:] == (16, 16)
    if "probs_xy" in out:  # the volume's (x, y) marginal: a distribution per joint
        sums = out["probs_xy"].sum(dim=(-2, -1))
        assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    # normalised float images are the same input
    net.eval()
    with torch.no_grad():
        a, b = net(images)["coords"], net(normalize_images(images))["coords"]
    assert torch.equal(a, b)


def test_posenet_config_errors() -> None:
    with pytest.raises(DabenchError, match=r"2\.5d, volumetric"):
        ModelConfig(head="3d")
    with pytest.raises(DabenchError, match="resnet18"):
        ModelConfig(backbone="resnet19")
    with pytest.raises(DabenchError, match="heatmap_stride"):
        ModelConfig(img_size=64, heatmap_stride=3)
    with pytest.raises(DabenchError, match=r"neck must be a non-negative integer \(0 = no neck\)"):
        ModelConfig(neck=-1)
    with pytest.raises(DabenchError, match="hrnet_w32"):
        PoseNet(ModelConfig(backbone="hrnet_w32", heatmap_stride=8), 21)
    with pytest.raises(DabenchError, match="num_joints"):
        PoseNet(ModelConfig(), 0)
    net = PoseNet(ModelConfig(), 2)
    with pytest.raises(DabenchError, match="uint8"):
        net(torch.zeros(1, 64, 64, 3))


def test_integral_loss_weights() -> None:
    net = PoseNet(ModelConfig(), 4)
    kp2d, kp3d, _ = random_labels(2, 4)
    vis = torch.ones(2, 4, dtype=torch.bool)
    target = net.targets(kp2d, kp3d, root=0)
    assert net.integral_loss({"coords": target}, kp2d, kp3d, vis, 0).item() == 0.0
    coords = target.clone()
    coords[0, 1, 0] += 0.3  # x error on joint 1
    coords[1, 2, 2] += 0.6  # z error on joint 2
    loss = net.integral_loss({"coords": coords}, kp2d, kp3d, vis, 0)
    assert torch.isclose(loss, torch.tensor(0.9 / 24))
    vis[0, 1] = vis[1, 2] = False  # invisible: no x/y loss, z still counts
    loss = net.integral_loss({"coords": coords}, kp2d, kp3d, vis, 0)
    assert torch.isclose(loss, torch.tensor(0.6 / 24))
    kp3d_missing = kp3d.clone()
    kp3d_missing[1, 2] = float("nan")  # no 3D label: nothing, and no NaN
    loss = net.integral_loss({"coords": coords}, kp2d, kp3d_missing, vis, 0)
    assert loss.item() == 0.0


@pytest.mark.slow
def test_tiny_posenet_overfits_one_batch() -> None:
    torch.manual_seed(0)
    # regnetx_002: the loss falls ~9x in 100 steps at half resnet18's cost
    net = PoseNet(ModelConfig(backbone="regnetx_002", img_size=64, head="2.5d"), 21)
    images = torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8)
    kp2d, kp3d, vis = random_labels(4, 21, seed=5)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(100):
        loss = net.integral_loss(net(images), kp2d, kp3d, vis, root=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 5, (losses[0], losses[-1])


@pytest.mark.parametrize("output_stride", [16, 8])
def test_resnet_output_stride_dilates_instead_of_striding(output_stride: int) -> None:
    b = create_backbone("resnet18", img_size=64, output_stride=output_stride)
    assert b.stride == output_stride
    assert b(torch.randn(1, 3, 64, 64)).shape[-1] == 64 // output_stride
    net = PoseNet(ModelConfig(output_stride=output_stride), 21)
    assert net(torch.zeros(1, 64, 64, 3, dtype=torch.uint8))["heatmaps"].shape[-1] == 16
    with pytest.raises(DabenchError, match="output_stride"):
        create_backbone("vit_tiny", img_size=64, output_stride=16)
    with pytest.raises(DabenchError, match="output_stride 12"):
        create_backbone("resnet18", img_size=64, output_stride=12)


@pytest.mark.parametrize("name", ["regnetx_002", "resnet18", "mobilenetv3_small_100"])
def test_feature_stride_cuts_the_backbone_after_that_stage(name: str, tmp_path) -> None:
    torch.manual_seed(3)
    whole = timm.create_model(name, pretrained=False, num_classes=1000).eval()
    stages = timm.create_model(name, pretrained=False, features_only=True).eval()
    index = max(i for i, r in enumerate(stages.feature_info.reduction()) if r == 16)
    cut = create_backbone(name, img_size=64, feature_stride=16).eval()
    assert cut.stride == 16
    assert cut.out_channels == stages.feature_info.channels()[index]
    assert sum(p.numel() for p in cut.parameters()) < sum(p.numel() for p in whole.parameters())
    # the whole network's ImageNet file loads (the dropped stages' keys are ignored), and
    # the map is what that network computes at its stride-16 stage
    path = tmp_path / "whole.pth"
    torch.save(whole.state_dict(), path)
    loaded = create_backbone(name, img_size=64, feature_stride=16, weights=path).eval()
    stages.load_state_dict(whole.state_dict(), strict=False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        got, expected = loaded(x), stages(x)[index]
    assert got.shape == (2, cut.out_channels, 4, 4)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    net = PoseNet(ModelConfig(backbone=name, feature_stride=16, head_channels=32), 21)
    assert net.head.net.num_deconv == 2  # stride 16 → heatmap stride 4
    assert net(torch.zeros(1, 64, 64, 3, dtype=torch.uint8))["heatmaps"].shape[-1] == 16


def test_feature_stride_errors_name_the_choices() -> None:
    with pytest.raises(DabenchError, match="feature_stride 12 not supported"):
        create_backbone("regnetx_002", img_size=64, feature_stride=12)
    with pytest.raises(DabenchError, match="feature_stride applies to CNN"):
        create_backbone("vit_tiny", img_size=64, feature_stride=16)
    with pytest.raises(DabenchError, match="set one of them"):
        create_backbone("resnet18", img_size=64, feature_stride=16, output_stride=16)


def test_cnn_pose_nets_run_channels_last_with_identical_results() -> None:
    torch.manual_seed(0)
    net = PoseNet(ModelConfig(backbone="regnetx_002", head_channels=32), 21).eval()
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.randint(0, 255, (2, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        out = net(images)["coords"]
        reference = net.to(memory_format=torch.contiguous_format)
        reference.channels_last = False
        ref = reference(images)["coords"]
    assert torch.allclose(out, ref, atol=1e-4)


@pytest.mark.parametrize("backbone", ["regnetx_002", "resnet10t"])
def test_group_norm_replaces_every_batch_norm_and_keeps_activations(backbone: str) -> None:
    from timm.layers import BatchNormAct2d, GroupNormAct

    from bench.models.pose_net import group_count, to_group_norm

    cfg = dict(backbone=backbone, img_size=64, head="volumetric", head_channels=16, neck=16)
    torch.manual_seed(0)
    net = PoseNet(ModelConfig(**cfg, norm="group"), 17)
    plain = PoseNet(ModelConfig(**cfg), 17)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    groups = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
    assert groups and all(m.num_channels % m.num_groups == 0 for m in groups)
    # timm's fused BN + activation keeps its activation (a bare GroupNorm would drop it)
    fused = [type(m.act) for m in groups if isinstance(m, GroupNormAct)]
    assert fused == [type(m.act) for m in plain.modules() if isinstance(m, BatchNormAct2d)]
    assert (nn.ReLU in fused) == (backbone == "regnetx_002")
    # no batch statistics: a sample's output is the same alone as in a batch, in training
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8, generator=g)
    net.train()
    together, alone = net(images)["coords"][:1], net(images[:1])["coords"]
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
    # a pretrained BN's affine weights seed GN's
    bn = nn.BatchNorm2d(24)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    gn = to_group_norm(nn.Sequential(bn))[0]
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == group_count(24) == 8
    assert torch.equal(gn.weight, bn.weight) and torch.equal(gn.bias, bn.bias)


def test_group_norm_is_refused_where_it_cannot_apply() -> None:
    with pytest.raises(DabenchError, match="unknown norm 'layer'; valid: batch, group"):
        ModelConfig(norm="layer")
    with pytest.raises(DabenchError, match="vit_tiny has LayerNorm only"):
        ModelConfig(backbone="vit_tiny", norm="group")
