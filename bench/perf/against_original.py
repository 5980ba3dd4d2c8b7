"""The suite's backbones against the original code, built from a checkout of PonderV2 or Pointcept.

For each backbone the original class is imported from the checkout's own file, given random weights and random
BatchNorm statistics (so that no layer is close to an identity), saved as a trainer checkpoint
(``{"epoch", "state_dict": {"module.backbone.<name>": ...}}``, as the original trainer writes it), loaded through
``create_backbone(name, checkpoint=...)``, and both are run in eval mode on one cloud (the surfaces of a 4 x 3 x 2 m
room at 2 cm, one point per voxel, 6 feature channels; then two clouds in one batch, the suite's shuffled and with
repeated points). The per-point features are compared.

    python -m bench.perf.against_original --checkout /path/to/PonderV2 --out results/perf/against_original.json

The original's imports that are not needed to build and run these classes are stubbed: the model registry
(``MODELS.register_module``) and ``torch_geometric``'s ``scatter`` (used only in its classification mode). On the
CPU the original's sparse convolutions are switched to spconv's Native algorithm, as the suite's are (the default,
implicit GEMM, runs on CUDA only); weights and indices are untouched.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import json
import subprocess
import sys
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from backbones.ptv3 import SONATA, SerializedAttention
from backbones.registry import create_backbone
from backbones.serialization import ORDERS
from backbones.sparse import conv_algo, spconv
from backbones.spunet_pdnorm import CONDITIONS, CONTEXT_CONDITIONS
from backbones.structures import PointBatch
from tasks.io import save_text


@dataclass(frozen=True)
class Original:
    """Where the original class of a backbone is and how PonderV2's configs build it."""

    file: str  # under <package>/models/
    cls: str
    kwargs: dict[str, object]
    condition: str | None = None  # PDNorm's: the dataset condition of the compared batch
    overrides: dict[str, object] = field(default_factory=dict)  # create_backbone's, to match ``kwargs``


_V1M3 = {"in_channels": 6, "num_classes": 0, "conditions": CONDITIONS, "zero_init": False, "norm_decouple": True,
         "norm_adaptive": True, "norm_affine": True}  # PonderV2's PPT configs
# Pointcept's PTv3 and Sonata configs, less flash-attn (absent on the CPU; the same patches, see ``compare``) and
# the shuffle of curve orders (random even in eval mode)
_NO_FLASH = {"enable_flash": False, "upcast_attention": False, "upcast_softmax": False, "shuffle_orders": False}
_PATCH = {"enc_patch_size": (1024,) * 5, "dec_patch_size": (1024,) * 4}  # the configs' (the classes' default: 48)
_PTV3 = {"in_channels": 6, "order": ORDERS, **_PATCH, **_NO_FLASH}
_SONATA = {"order": ORDERS, **{k: v for k, v in SONATA.items() if k != "variant"}, **_PATCH, **_NO_FLASH}
_PTV3_FILE = "point_transformer_v3/point_transformer_v3m{}.py"
ORIGINALS = {"spunet-v1m1": Original("sparse_unet/spconv_unet_v1m1_base.py", "SpUNetBase",
                                     {"in_channels": 6, "num_classes": 0}),
             "spunet-v1m3": Original("sparse_unet/spconv_unet_v1m3_pdnorm.py", "SpUNetBase", _V1M3, "S3DIS"),
             "ptv3-v1m1": Original(_PTV3_FILE.format("1_base"), "PointTransformerV3", _PTV3),
             "sonata-v1m1": Original(_PTV3_FILE.format("2_sonata"), "PointTransformerV3", _SONATA)}


class _Registry:
    """Stands in for the original's ``MODELS`` registry: registering keeps the class by name and returns it
    unchanged; ``build`` makes one from a config (a dict with ``type``)."""

    def __init__(self) -> None:
        self.classes: dict[str, type] = {}

    def register_module(self, name: object = None, module: object = None, force: bool = False) -> object:
        if isinstance(name, type):
            self.classes[name.__name__] = name
            return name

        def keep(cls: type) -> type:
            self.classes[name if isinstance(name, str) else cls.__name__] = cls
            return cls

        return keep(module) if module is not None else keep

    def build(self, cfg: dict) -> object:
        kwargs = dict(cfg)
        return self.classes[kwargs.pop("type")](**kwargs)


class _Config(dict):
    """A config dict read by attribute as well (the original's ``backbone.type``)."""

    __getattr__ = dict.__getitem__


def _fake_clip(seed: int) -> types.ModuleType:
    """Stands in for OpenAI's ``clip`` package, which PPT loads to embed its class names: random unit text
    embeddings (seeded), CLIP ViT-B/16's text width (512) and logit scale (ln 100). The embeddings reach the
    checkpoint as PPT's ``class_embedding`` buffer, as a released model's do."""
    clip = types.ModuleType("clip")
    generator = torch.Generator().manual_seed(seed)

    class TextModel:
        text_projection = torch.zeros(512, 512)
        logit_scale = torch.nn.Parameter(torch.tensor(float(np.log(100.0))))

        def requires_grad_(self, flag: bool) -> TextModel:
            self.logit_scale.requires_grad_(flag)
            return self

        def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
            return torch.randn(len(tokens), 512, generator=generator)

    clip.load = lambda name, device=None, download_root=None: (TextModel(), None)
    clip.tokenize = lambda prompts: torch.zeros(len(prompts), 77, dtype=torch.long)
    return clip


def _import_original(checkout: Path, relative: str) -> tuple[types.ModuleType, str]:
    package = "ponder" if (checkout / "ponder" / "models").is_dir() else "pointcept"
    models = checkout / package / "models"
    if not (models / relative).is_file():
        raise FileNotFoundError(f"{models / relative}: not a PonderV2 or Pointcept checkout")
    builder = types.ModuleType(f"{package}.models.builder")
    builder.MODELS = builder.MODULES = _Registry()  # the first import's module stays: one registry for all
    losses = types.ModuleType(f"{package}.models.losses")
    losses.build_criteria = lambda cfg: None  # PPT's criteria: training only
    geometric = types.ModuleType("torch_geometric.utils")
    geometric.scatter = None
    root, models_module = types.ModuleType(package), types.ModuleType(f"{package}.models")
    root.__path__, models_module.__path__ = [str(checkout / package)], [str(models)]  # the rest imports from disk
    for name, module in {package: root, f"{package}.models": models_module, f"{package}.models.builder": builder,
                         f"{package}.models.losses": losses, **_ptv3_stubs(package),
                         "torch_geometric": types.ModuleType("torch_geometric"),
                         "torch_geometric.utils": geometric}.items():
        sys.modules.setdefault(name, module)
    if not (models / "utils.py").is_file() and not (models / "utils" / "__init__.py").is_file():
        # PonderV2 keeps offset2batch in models/utils.py, Pointcept in the package models/utils/ (torch only)
        raise FileNotFoundError(f"{models}: neither utils.py nor utils/__init__.py (offset2batch)")
    spec = importlib.util.spec_from_file_location(f"original_{Path(relative).stem}", models / relative)
    original = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(original)
    return original, f"{package}/models/{relative}"


def _ptv3_stubs(package: str) -> dict[str, types.ModuleType]:
    """What PTv3 and Sonata import beyond building and running the backbone: the trainer's hook base class
    (``models.modules``), PDNorm (only with ``pdnorm_*`` options, off in these configs); ``torch_scatter`` (a CUDA
    build) as ``segment_csr`` through ``torch.segment_reduce``; and ``addict``'s attribute dict where it is not
    installed (Pointcept's ``Point`` is one)."""
    hooks = types.ModuleType(f"{package}.engines.hooks")
    hooks.HookBase = object
    prompt = types.ModuleType(f"{package}.models.point_prompt_training")
    prompt.PDNorm = None
    scatter = types.ModuleType("torch_scatter")
    scatter.segment_csr = lambda src, indptr, reduce="sum": torch.segment_reduce(src, reduce, offsets=indptr, axis=0)
    stubs = {f"{package}.engines": types.ModuleType(f"{package}.engines"), f"{package}.engines.hooks": hooks,
             f"{package}.models.point_prompt_training": prompt, "torch_scatter": scatter}
    try:
        importlib.import_module("addict")
    except ImportError:
        addict = types.ModuleType("addict")

        class Dict(dict):
            def __getattr__(self, key: str) -> object:
                try:
                    return self[key]
                except KeyError:
                    raise AttributeError(key) from None

            def __setattr__(self, key: str, value: object) -> None:
                self[key] = value

        addict.Dict = Dict
        stubs["addict"] = addict
    return stubs


def _randomise(model: torch.nn.Module, seed: int) -> None:
    """Random weights and BatchNorm statistics (so that no layer is close to an identity), eval mode, and on the CPU
    spconv's Native algorithm (its default, implicit GEMM, runs on CUDA only)."""
    model.eval()
    if conv_algo() is not None:
        for layer in model.modules():
            if isinstance(layer, spconv.conv.SparseConvolution):
                layer.algo = conv_algo()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + noise.abs())
            elif name.endswith(("running_mean", "bias")):
                tensor.copy_(0.1 * noise)
            elif tensor.dim() == 1:  # BatchNorm weights
                tensor.copy_(1.0 + 0.1 * noise)
            else:  # convolutions: a variance that keeps activations of order one through the net
                fan_in = tensor[0].numel() if tensor.dim() > 1 else 1
                tensor.copy_(noise / np.sqrt(fan_in))


def _room(voxel: float = 0.02) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The floor, ceiling and walls of a 4 x 3 x 2 m room, one point per voxel; features: colour and normal."""
    size = np.round(np.array([4.0, 3.0, 2.0]) / voxel).astype(int)
    cells = []
    for axis in range(3):
        others = [a for a in range(3) if a != axis]
        u, v = np.meshgrid(np.arange(size[others[0]]), np.arange(size[others[1]]), indexing="ij")
        for side in (0, size[axis] - 1):
            cell = np.zeros((u.size, 3), dtype=np.int64)
            cell[:, axis], cell[:, others[0]], cell[:, others[1]] = side, u.ravel(), v.ravel()
            cells.append(cell)
    grid = np.unique(np.concatenate(cells), axis=0)
    coord = (grid + 0.5) * voxel
    rng = np.random.default_rng(0)
    feat = np.concatenate([rng.uniform(-1, 1, (len(grid), 3)), rng.normal(size=(len(grid), 3))], axis=1)
    return coord.astype(np.float32), grid.astype(np.int32), feat.astype(np.float32)


Cloud = tuple[np.ndarray, np.ndarray, np.ndarray]  # coord, grid_coord, feat: one point per voxel


def _scan(path: Path, voxel: float = 0.02) -> Cloud:
    """A real ScanNet scan (x, y, z, r, g, b float32 records), one point per 2 cm voxel (the first), features the
    colour / 255 and zero normals (the scan has none)."""
    from tasks.formats.scannet import read_scannet_points_bin

    scene = read_scannet_points_bin(path)
    cells = np.floor((scene.coord - scene.coord.min(0)) / voxel).astype(np.int64)
    _, first = np.unique(cells, axis=0, return_index=True)
    first = np.sort(first)
    feat = np.concatenate([scene.color[first] / 255.0, np.zeros((len(first), 3))], axis=1)
    return scene.coord[first].astype(np.float32), cells[first].astype(np.int32), feat.astype(np.float32)


def compare(name: str, checkout: Path, seed: int = 0, cloud: Cloud | None = None) -> dict[str, object]:
    spec = ORIGINALS[name]
    module, source = _import_original(checkout, spec.file)
    torch.manual_seed(seed)
    original = net = getattr(module, spec.cls)(**spec.kwargs)
    serialized = spec.file.startswith("point_transformer_v3")
    if serialized:
        original = _PointFeatures(net)
    _randomise(original, seed)
    state = {f"module.backbone.{k}": v for k, v in net.state_dict().items()}
    extra: dict[str, object] = {}
    if spec.condition is not None:  # the context table lives in the model around the backbone (PPT, Ponder)
        table = torch.randn(len(CONTEXT_CONDITIONS), 256, generator=torch.Generator().manual_seed(seed + 1))
        state["module.embedding_table.weight"] = table
        row = CONTEXT_CONDITIONS.index(spec.condition)
        extra = {"condition": [spec.condition], "context": table[row:row + 1]}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model_last.pth"
        torch.save({"epoch": 1, "state_dict": state}, path)
        ours = create_backbone(name, checkpoint=path).eval()
    coord, grid, feat = cloud if cloud is not None else _room()
    if ours.in_channels == 9:  # Sonata's input: coordinates (centred), colour, normal
        feat = np.concatenate([coord - coord.mean(0), feat], axis=1)
    with torch.no_grad():
        theirs = original({"grid_coord": torch.from_numpy(grid), "feat": torch.from_numpy(feat),
                           "offset": torch.tensor([len(grid)]), "coord": torch.from_numpy(coord), **extra})
        mine = ours(PointBatch.collate([(coord, grid, feat)], condition=spec.condition))
        if serialized:
            _patch_size(original, ours, BATCHED_PATCH)
        batch_theirs, batch_mine = _batched(original, ours, (coord, grid, feat), extra, spec.condition)
    report = ours.checkpoint
    arguments = ", ".join(f"{k}={v}" for k, v in spec.kwargs.items())
    return {"backbone": name, "original": f"{source}:{spec.cls}({arguments})", "condition": spec.condition,
            "original_sha256": hashlib.sha256((checkout / source).read_bytes()).hexdigest(),
            "checkout_commit": _commit(checkout), "points": len(grid),
            "params": sum(p.numel() for p in ours.parameters()),
            "layout": report.layout, "prefix": report.prefix, "missing": list(report.missing),
            "unexpected": list(report.unexpected), "feature_scale": float(theirs.abs().max()),
            "max_abs_difference": float((theirs - mine).abs().max()),
            "batched_points": len(batch_mine), "batched_patch_size": BATCHED_PATCH if serialized else None,
            "batched_max_abs_difference": float((batch_theirs - batch_mine).abs().max())}


class _PointFeatures(torch.nn.Module):
    """The original PTv3 or Sonata as Pointcept's ``DefaultSegmentorV2`` reads it: a data dict in, the finest
    level's features out, with every pooled level's upcast and concatenated for an encoder (Sonata's probe). The
    shuffle of curve orders, which its poolings keep on even in eval mode, is turned off. Its positional-encoding
    convs, which carry a bias, stay in spconv's training path, which adds the bias after the convolution (the
    eval path asserts on the CPU); nothing else in a sparse conv depends on the mode."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        for module in net.modules():
            if hasattr(module, "shuffle_orders"):
                module.shuffle_orders = False

    def forward(self, data: dict[str, object]) -> torch.Tensor:
        point = self.net(data)
        while "pooling_parent" in point:
            parent, inverse = point.pop("pooling_parent"), point.pop("pooling_inverse")
            parent.feat = torch.cat([parent.feat, point.feat[inverse]], dim=-1)
            point = parent
        return point.feat

    def train(self, mode: bool = True) -> _PointFeatures:
        super().train(mode)
        for module in self.net.modules():
            if isinstance(module, spconv.conv.SparseConvolution) and module.bias is not None:
                module.training = True
        return self


# Without flash-attn the original shrinks every patch to the smallest cloud of a batch; with it (and here) a cloud
# shorter than the patch size is one patch of its own. The two agree when every cloud has at least a patch's voxels
# at every level: true of the room and its half at 128, not at the configs' 1024 (the half has ~400 at the deepest).
BATCHED_PATCH = 128


def _patch_size(original: torch.nn.Module, ours: torch.nn.Module, size: int) -> None:
    for module in original.modules():
        if hasattr(module, "patch_size_max"):
            module.patch_size_max = size
    for module in ours.modules():
        if isinstance(module, SerializedAttention):
            module.patch_size = size


def _batched(original: torch.nn.Module, ours: torch.nn.Module, cloud: tuple[np.ndarray, np.ndarray, np.ndarray],
             extra: dict[str, object], condition: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two clouds in one batch (the room, and half of it with other features). The original reads one point per
    voxel in order, as Pointcept's GridSample leaves them; the suite's backbone gets each cloud shuffled with 2 %
    of its points repeated. Returns, for every point the suite read, the original's feature of its voxel and the
    suite's."""
    coord, grid, feat = cloud
    half = len(grid) // 2
    clouds = [(coord, grid, feat), (coord[:half], grid[:half], -feat[:half])]
    theirs = original({"grid_coord": torch.from_numpy(np.concatenate([c[1] for c in clouds])),
                       "feat": torch.from_numpy(np.concatenate([c[2] for c in clouds])),
                       "coord": torch.from_numpy(np.concatenate([c[0] for c in clouds])),
                       "offset": torch.tensor([len(grid), len(grid) + half]), **extra})
    rng = np.random.default_rng(1)
    pieces, rows, start = [], [], 0
    for part in clouds:
        n = len(part[1])
        pick = np.concatenate([np.arange(n), rng.choice(n, n // 50)])
        rng.shuffle(pick)
        pieces.append(tuple(a[pick] for a in part))
        rows.append(start + pick)
        start += n
    return theirs[torch.from_numpy(np.concatenate(rows))], ours(PointBatch.collate(pieces, condition=condition))


PPT_FILE = "point_prompt_training/point_prompt_training_v1m1_language_guided.py"


def compare_ppt(checkout: Path, task: str = "s3dis-area5-semseg", seed: int = 0,
                cloud: Cloud | None = None) -> dict[str, object]:
    """PPT-v1m1 around SpUNet-v1m3 as PonderV2's fine-tuning configs build it, random weights (its language head
    included, and random text embeddings in place of CLIP's), saved as a trainer checkpoint, rebuilt by
    ``ponderbench evaluate``'s loader (:func:`bench.finetune.released.released_model`) for ``task``; the per-point
    logits over the task's classes are compared."""
    from bench.finetune.released import released_model
    from tasks.spec import get_task

    spec = get_task(task)
    _import_original(checkout, ORIGINALS["spunet-v1m3"].file)  # registers SpUNet-v1m3 for PPT's builder
    sys.modules["clip"] = _fake_clip(seed)
    module, source = _import_original(checkout, PPT_FILE)
    torch.manual_seed(seed)
    original = module.PointPromptTraining(
        backbone=_Config(type="SpUNet-v1m3", **_V1M3), criteria=None,
        conditions=CONTEXT_CONDITIONS, template="[x]")
    _randomise(original, seed)
    with torch.no_grad():
        original.logit_scale.fill_(float(np.log(100.0)))  # CLIP's: logits up to 100, as a released model's
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model_best.pth"
        torch.save({"epoch": 100, "state_dict": {f"module.{k}": v for k, v in original.state_dict().items()}}, path)
        released = released_model(path, spec)
    ours = released.model.eval()
    coord, grid, feat = cloud if cloud is not None else _room()
    with torch.no_grad():
        theirs = original({"grid_coord": torch.from_numpy(grid), "feat": torch.from_numpy(feat),
                           "coord": torch.from_numpy(coord), "offset": torch.tensor([len(grid)]),
                           "condition": [spec.condition]})["seg_logits"]
        mine = ours(PointBatch.collate([(coord, grid, feat)], condition=spec.condition))
    report = ours.backbone.checkpoint
    return {"model": "PPT-v1m1 + spunet-v1m3", "task": task, "condition": spec.condition,
            "original": f"{source}:PointPromptTraining(backbone=SpUNet-v1m3, conditions={CONTEXT_CONDITIONS})",
            "original_sha256": hashlib.sha256((checkout / source).read_bytes()).hexdigest(),
            "checkout_commit": _commit(checkout), "points": len(grid), "classes": int(mine.shape[1]),
            "head": released.head, "prefix": report.prefix, "missing": list(report.missing),
            "unexpected": list(report.unexpected), "max_abs_logit": float(theirs.abs().max()),
            "max_abs_difference": float((theirs - mine).abs().max()),
            "same_argmax": float((theirs.argmax(1) == mine.argmax(1)).float().mean())}


def _commit(checkout: Path) -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", required=True, type=Path, help="a PonderV2 or Pointcept checkout")
    parser.add_argument("--backbones", default=",".join(ORIGINALS), help="comma-separated")
    parser.add_argument("--no-ppt", action="store_true", help="leave out PPT-v1m1 (its logits through evaluate)")
    parser.add_argument("--scan", type=Path, help="compare on this real ScanNet scan (.bin, x y z r g b) instead of "
                                                  "the generated room")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    cloud = _scan(args.scan) if args.scan else None
    rows = [compare(name.strip(), args.checkout, cloud=cloud) for name in args.backbones.split(",") if name.strip()]
    if not args.no_ppt:
        rows.append(compare_ppt(args.checkout, cloud=cloud))
    for row in rows:
        row["cloud"] = str(args.scan) if args.scan else "the generated room"
    for row in rows:
        print(json.dumps(row))
    if args.out:
        save_text(args.out, json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
