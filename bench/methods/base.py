"""The method adapter interface: one small class per method (DomainBed's lesson), beside
its torch-free declaration (:mod:`bench.methods.spec`). The trainer owns optimisation; a
method builds its modules, says which losses to minimise on a batch and, where a paper
asks for it, acts at the start of a stage (freeze, copy, load) and after an optimiser step
(an EMA teacher)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import nn

from bench.config import ModelConfig
from bench.data.joints import JointSet
from bench.errors import DabenchError
from bench.methods.spec import MethodSpec, Stage
from bench.models.pose_net import PoseNet, Prediction

if TYPE_CHECKING:
    from pathlib import Path

    from bench.data.pairs import PairShards

Batch = Mapping[str, Mapping[str, torch.Tensor]]


class StepContext(Protocol):
    """What ``training_step`` may use of the trainer (see :class:`bench.trainer.Trainer`)."""

    step: int  # optimisation steps done before this one, over the whole run
    progress: float  # 0 → 1 over the current stage (schedules such as DANN's λ_p)

    def backward(self, loss: torch.Tensor, optimizer: str) -> None: ...

    def optimizer_step(self, optimizer: str) -> None: ...


class StageContext(Protocol):
    """What ``on_stage_start`` may use: the artifacts of earlier stages and whether the
    run is being resumed (the hook is replayed before a checkpoint is loaded)."""

    artifacts: Mapping[str, Path]
    resuming: bool


class Method(nn.Module):
    """Base class of method adapters. Subclasses set ``spec`` and implement
    :meth:`training_step`; the default :meth:`predict` decodes the pose net."""

    spec: ClassVar[type[MethodSpec]] = MethodSpec
    # the submodules ``predict`` reads: the pose network, plus whatever a method's protocol
    # maps its output through (Mask as Supervision's supervised post-processing)
    predictor_parts: ClassVar[tuple[str, ...]] = ("net",)

    def __init__(
        self,
        hparams: Any,
        model_config: ModelConfig,
        num_joints: int,
        root: int,
        joint_set: JointSet | None = None,
    ):
        super().__init__()
        if joint_set is not None and joint_set.num_joints != num_joints:
            raise DabenchError(
                f"joint set {joint_set.name} has {joint_set.num_joints} joints, not {num_joints}"
            )
        self.hparams = hparams
        self.root = root
        # The kinematic tree, for methods that read bones (None where a caller gives only
        # the joint count; such a method says so when it is built)
        self.joint_set = joint_set
        self.net = PoseNet(model_config, num_joints)
        # Modules a stage froze: kept in eval mode whatever train() is asked (a frozen
        # copy's BatchNorm statistics and dropout must not change).
        self._frozen: list[nn.Module] = []

    @property
    def name(self) -> str:
        return self.spec.name

    def stages(self) -> list[Stage]:
        return self.spec.checked_stages(self.hparams)

    # -- hooks -------------------------------------------------------------------------------
    def on_stage_start(self, stage: Stage, ctx: StageContext) -> None:
        """Called before a stage's first step (and replayed, in order, when a run resumes)."""

    def training_step(self, stage: str, batch: Batch, ctx: StepContext) -> dict[str, torch.Tensor]:
        """The stage's declared losses on one batch (``batch[role][field]``). In a manual
        stage the method calls ``ctx.backward``/``ctx.optimizer_step`` itself and returns
        the losses detached, for the log."""
        raise NotImplementedError

    def after_optimizer_step(self, stage: str, optimizer: str, ctx: StepContext) -> None:
        """Called after each optimiser step (e.g. an EMA teacher's update)."""

    def scalars(self) -> dict[str, float]:
        """Extra scalars to log with the losses (e.g. discriminator accuracy)."""
        return {}

    def export_artifact(self, stage: str, directory: Path, pair: PairShards) -> None:
        """Write data a stage produces besides the weights into ``directory`` — e.g. a
        segmenter's masks for every row of ``pair``'s target training shard, which a later
        stage reads with :class:`bench.data.views.FromArtifact`; the weights are stored by
        the harness."""

    # -- frozen modules -------------------------------------------------------------------------
    def freeze(self, module: nn.Module) -> None:
        """No gradients and eval mode for ``module`` from now on."""
        module.requires_grad_(False)
        module.eval()
        if not any(m is module for m in self._frozen):
            self._frozen.append(module)

    def train(self, mode: bool = True) -> Method:
        super().train(mode)
        for module in self._frozen:
            module.eval()
        return self

    # -- prediction ------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        """2D keypoints (px) and root-relative depth (mm) for uint8 images [B, H, W, 3]."""
        return self.net.decode(self.net(images), self.root)

    def supervised_loss(self, data: Mapping[str, torch.Tensor], out: Mapping) -> torch.Tensor:
        """The integral pose loss on a labelled batch — shared by every method."""
        return self.net.integral_loss(out, data["kp2d"], data["kp3d"], data["vis"], self.root)


def build_method(
    spec: type[MethodSpec],
    hparams: Any,
    model_config: ModelConfig,
    num_joints: int,
    root: int,
    joint_set: JointSet | None = None,
) -> Method:
    """The adapter of ``spec`` built with these settings (``joint_set``: the pair's joints,
    for methods that need the kinematic tree)."""
    cls = spec.method_class()
    if getattr(cls, "spec", None) is not spec:
        raise DabenchError(
            f"method {spec.name}: its adapter {cls.__name__} declares spec "
            f"{getattr(cls, 'spec', None)!r}, not {spec.__name__}"
        )
    return cls(hparams, model_config, num_joints, root, joint_set)
