"""The Ponder model: a backbone learns by rendering, inside a volumetric neural renderer.

backbone -> feature volume (scatter-mean of point features, or 2D features lifted from the views) -> 3D U-Net
(or PonderV2 outdoor's one convolution) -> SDF and colour volumes -> NeuS rendering of the sample's rays -> losses.
The backbone's input follows :mod:`tasks.contract`, so its export fine-tunes on exactly what it was pre-trained on.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn
from torch.profiler import record_function

from backbones.registry import create_backbone, get_backbone_config
from backbones.structures import PointBatch
from bench.pretrain.data import PretrainSample
from bench.recipes import PretrainRecipe
from renderer.fields import FieldConfig, VolumeField
from renderer.projection import SimpleConv3D, UNet3D
from renderer.rays import RayBundle
from renderer.render import render_rays
from renderer.samplers import NeuSSampler
from renderer.semantic import class_embeddings
from renderer.step import render_and_backward
from renderer.volume import scatter_mean
from tasks.contract import in_channels


class PonderModel(nn.Module):
    def __init__(self, recipe: PretrainRecipe, class_names: tuple[str, ...] = (),
                 class_sets: dict[str, tuple[int, ...]] | None = None) -> None:
        """``class_names``: the classes pixel labels are scored on (none: no semantic rendering); ``class_sets``:
        each dataset condition's rows of them, where a sample's labels index its condition's rows (PPT)."""
        super().__init__()
        self.recipe = recipe
        self.class_sets = class_sets
        config = get_backbone_config(recipe.backbone)
        self.modality = config.modality
        if config.modality == "3d":
            self.backbone = create_backbone(recipe.backbone, in_channels=in_channels(recipe.domain))
            feature_channels = self.backbone.config.out_channels
        else:
            self.backbone = create_backbone(recipe.backbone)
            self.level = min(range(len(self.backbone.strides)), key=lambda i: abs(self.backbone.strides[i] - 8))
            feature_channels = self.backbone.channels[self.level]
        if (recipe.mode == "image") != (config.modality == "2d"):
            raise ValueError(f"mode {recipe.mode!r} needs a {'2D' if recipe.mode == 'image' else '3D'} backbone, "
                             f"{recipe.backbone!r} is {config.modality}")
        # PonderV2 outdoor: masked blocks keep their points, their features replaced by this learned token
        self.mask_token = (nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, in_channels(recipe.domain)), std=0.02,
                                                              a=-0.02, b=0.02))
                           if recipe.mask_token else None)
        if recipe.projection == "conv":
            if recipe.sdf_channels != recipe.color_channels:
                raise ValueError("the conv projection's one volume is both the SDF and the colour volume: "
                                 f"sdf_channels ({recipe.sdf_channels}) must equal color_channels "
                                 f"({recipe.color_channels})")
            self.to_volume = nn.Identity()
            self.projection = SimpleConv3D(feature_channels, recipe.sdf_channels)
        else:
            self.to_volume = nn.Linear(feature_channels, recipe.volume_channels)
            self.projection = UNet3D(recipe.volume_channels, (recipe.sdf_channels, recipe.color_channels),
                                     recipe.unet_base, recipe.unet_levels)
        semantic_dim = recipe.semantic_dim if class_names else 0
        self.field = VolumeField(FieldConfig(recipe.sdf_channels, recipe.color_channels, recipe.hidden,
                                             layers=recipe.field_layers, geometry_features=recipe.geometry_features,
                                             semantic_dim=semantic_dim))
        self.sampler = NeuSSampler(recipe.n_uniform, recipe.n_importance)
        self.register_buffer("class_embeddings", class_embeddings(list(class_names), dim=semantic_dim)
                             if semantic_dim else torch.zeros(0))

    def forward(self, sample: PretrainSample) -> tuple[torch.Tensor, torch.Tensor]:
        """The sample's SDF and colour volumes, (1, Z, Y, X, C) each (backbone, feature volume, U-Net: every
        BatchNorm of the model); :meth:`train_step` and :meth:`render` run the field's decoders on them."""
        amp = self.recipe.amp and sample.rays.origins.is_cuda
        with record_function("model/backbone"), torch.autocast("cuda", torch.bfloat16, enabled=amp):
            if self.modality == "3d":
                feats = self.backbone(self._masked(sample))
            else:
                maps = self.backbone(sample.images)
        if self.modality == "3d":
            with record_function("model/scatter"):
                feats = self.to_volume(feats.float())
                volume = scatter_mean(sample.points.coord, feats, sample.points.batch_index, 1, sample.spec)
        else:
            from backbones.lift import lift_to_volume

            with record_function("model/lift"):
                h, w = sample.images.shape[-2:]
                lifted, _ = lift_to_volume(maps.maps[self.level].float(), maps.strides[self.level], sample.intrinsics,
                                           sample.cam_to_world, (h, w), sample.spec.lo, sample.spec.hi,
                                           sample.spec.shape)
                volume = self.to_volume(lifted)
        with record_function("model/projection"):
            return self.projection(volume)

    def _masked(self, sample: PretrainSample) -> PointBatch:
        """The backbone's input: the mask token in place of the features of the sample's masked points."""
        points = sample.points
        if self.mask_token is None or sample.masked is None:
            return points
        feat = torch.where(sample.masked[:, None], self.mask_token.to(points.feat.dtype), points.feat)
        return replace(points, feat=feat)

    def train_step(self, sample: PretrainSample, generator: torch.Generator | None = None, loss_scale: float = 1.0
                   ) -> dict[str, float]:
        """Render the sample's rays in chunks of ``recipe.ray_chunk`` and back-propagate ``loss_scale`` x the loss
        into every parameter; returns the weighted loss terms and their sum, ``total`` (unscaled).

        The one renderer training path (:func:`renderer.step.render_and_backward`): pre-training, the low-level
        fits and the renderer benchmarks run it, so the measured path is the product's. Chunks change the peak
        memory, not the result (float summation order aside).
        """
        sdf, color = self(sample)
        emb = self.class_embeddings if sample.labels_known and self.class_embeddings.numel() else None
        if emb is not None and self.class_sets is not None:
            emb = emb[list(self.class_sets[sample.points.condition])]
        return render_and_backward(self.field, (sdf, color), sample.spec, sample.rays, self.sampler,
                                   self.recipe.losses, emb, chunk=self.recipe.ray_chunk, perturb=True,
                                   generator=generator, loss_scale=loss_scale)

    @torch.no_grad()
    def render(self, sample: PretrainSample, rays: RayBundle, chunk: int = 2048, field: VolumeField | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """RGB and depth of arbitrary rays through the sample's volume (no gradient, BatchNorm in eval mode).
        ``field``: the field already bound to this sample's volumes, when many renders of one sample share them."""
        was_training = self.training
        self.eval()
        try:
            if field is None:
                field = self.field.bind(*self(sample), sample.spec)
            outs = [render_rays(field, rays[i:i + chunk], self.sampler) for i in range(0, len(rays), chunk)]
        finally:
            self.train(was_training)
        return torch.cat([o.rgb for o in outs]), torch.cat([o.depth for o in outs])


def sample_to(sample: PretrainSample, device: torch.device) -> PretrainSample:
    def move(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(device)

    points = None if sample.points is None else sample.points.to(device)
    return replace(sample, rays=sample.rays.to(device), points=points, images=move(sample.images),
                   masked=move(sample.masked),
                   intrinsics=move(sample.intrinsics), cam_to_world=move(sample.cam_to_world))


