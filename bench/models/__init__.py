"""Pose models: timm backbones, deconvolution heads, heatmaps, integral regression, lifting."""

from bench.models.backbones import BACKBONES, Backbone, create_backbone, normalize_images
from bench.models.pose_net import ModelConfig, PoseNet, Prediction

__all__ = [
    "BACKBONES",
    "Backbone",
    "ModelConfig",
    "PoseNet",
    "Prediction",
    "create_backbone",
    "normalize_images",
]
