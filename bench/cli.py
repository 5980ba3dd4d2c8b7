"""The ``ponderbench`` command line, grouped by what users do."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pandas as pd

from bench.console import configure
from bench.matrix.claims import MIN_STALE_AFTER_S, STALE_AFTER_S


def _data_synth(args: argparse.Namespace) -> int:
    from tasks.synth.suite import synthesize

    root = Path(args.root or f"data/{args.suite}")
    start = time.perf_counter()
    datasets = _csv(args.datasets) if args.datasets else None
    try:
        synthesize(root, args.suite, seed=args.seed, progress=not args.no_progress, datasets=datasets,
                   workers=args.workers, **_parse_sizes(args.size))
    except (ValueError, FileExistsError) as exc:  # a bad size override or dataset, or one already there
        raise SystemExit(f"ponderbench data synth: {exc}") from exc
    print(f"wrote the '{args.suite}' suite to {root} in {time.perf_counter() - start:.1f} s")
    return _print_check(root, None, None, ())


def _parse_sizes(items: list[str]) -> dict[str, object]:
    """``key=value`` size overrides, values as Python literals (``scannet_scenes=(4,2,1)``)."""
    import ast

    sizes = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--size expects KEY=VALUE, got {item!r}")
        try:
            sizes[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError) as exc:
            raise SystemExit(f"--size {item!r}: value is not a literal ({exc})") from exc
    return sizes


def _data_check(args: argparse.Namespace) -> int:
    return _print_check(Path(args.root), args.datasets, args.max_scenes, tuple(args.require))


def _print_check(root: Path, datasets: list[str] | None, max_scenes: int | None, required: tuple[str, ...]) -> int:
    from tasks.check import check_root, failures

    names = list(dict.fromkeys([*datasets, *required])) if datasets else None
    try:
        reports = check_root(root, names, max_scenes, required)
    except KeyError as exc:
        return _usage_error("data check", exc)
    table = pd.DataFrame([{
        "dataset": r.dataset, "status": r.status if r.present or r.dataset not in required else "MISSING",
        **{f"{s} scenes": r.splits.get(s, 0) for s in ("train", "val")}, "points": r.points, "path": str(r.path),
    } for r in reports])
    print(table.to_string(index=False))
    for r in reports:
        for problem in r.problems:
            print(f"  [{r.dataset}] {problem}")
        if not r.present and r.dataset in required:
            print(f"  [{r.dataset}] {r.path}: folder is missing (required)")
    return 1 if failures(reports, required) else 0


def _list(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    if args.what == "datasets":
        from tasks.check import CHECKS

        print("\n".join(CHECKS))
    elif args.what == "backbones":
        from backbones.registry import get_backbone_config, list_backbones

        rows = [asdict(get_backbone_config(n)) for n in list_backbones(args.pattern)]
        table = pd.DataFrame(rows, columns=["name", "modality", "in_channels", "out_channels", "params",
                                            "voxel_size", "description"])
        table["params"] = table["params"].map(lambda p: f"{p / 1e6:.2f}M")
        print(table.to_string(index=False))
    elif args.what == "tasks":
        from tasks.spec import get_task, list_tasks

        rows = [asdict(spec) | {"reference": spec.reference} for spec in map(get_task, list_tasks(args.pattern))]
        table = pd.DataFrame(rows)[["id", "version", "task_type", "main_score", "protocol", "reference", "runnable",
                                    "title"]]
        print(table.to_string(index=False))
    elif args.what == "recipes":
        return _list_recipes(args)
    elif args.what == "suites":
        from tasks.synth.suite import SUITES

        print(pd.DataFrame([{"suite": k, **v.__dict__} for k, v in SUITES.items()]).to_string(index=False))
    return 0


def _list_recipes(args: argparse.Namespace) -> int:
    """The presets, or one recipe resolved value by value with the source of each (``--task``, ``--pretrain``)."""
    import json

    from bench.recipes import (
        FINETUNE_PRESETS,
        PRESETS,
        PRETRAIN_FOR_FINETUNE,
        PRETRAIN_SETTINGS,
        finetune_sources,
        get_finetune_recipe,
        recipe_sources,
    )

    if args.task or args.pretrain:
        if args.pretrain:
            if args.pretrain not in PRESETS:
                raise SystemExit(f"ponderbench list recipes: unknown pre-training preset {args.pretrain!r}; choose "
                                 f"from {', '.join(sorted(PRESETS))}")
            resolved = recipe_sources(PRESETS[args.pretrain], PRETRAIN_SETTINGS[args.pretrain])
        else:
            from tasks.spec import get_task

            resolved = finetune_sources(args.preset, get_task(args.task))
        if args.format == "json":
            print(json.dumps(resolved, indent=1))
        else:
            print(pd.DataFrame([{"field": k, **v} for k, v in resolved.items()]).to_string(index=False))
        return 0
    print(pd.DataFrame([{"preset": k, "mode": r.mode, "backbone": r.backbone, "epochs": r.epochs,
                         "batch": r.batch_size, "optimizer": r.optimizer, "lr": r.lr, "grid": r.grid,
                         "rays": f"LiDAR {r.lidar_rays}" if r.mode == "outdoor" and r.outdoor_rays == "lidar" else
                         f"{r.views}x{r.rays_per_view}"} for k, r in PRESETS.items()]).to_string(index=False))
    print("\nfine-tuning presets (ponderbench run --preset NAME KEY=VALUE ...): each task's reference recipe with "
          "these settings\n(ponderbench list recipes --task TASK --preset NAME shows one task's, with sources)")
    for name, settings in FINETUNE_PRESETS.items():
        init = " ".join((PRETRAIN_FOR_FINETUNE[name][0].format(mode="<mode>"), *PRETRAIN_FOR_FINETUNE[name][1]))
        print(f"  {name}: {' '.join(s.item for s in settings) or '(the reference as it is)'}; ponder init: {init}")
    get_finetune_recipe("mini")  # the presets resolve
    return 0


DEFAULT_DATA = "data/mini"
# The main job's matrix: one task per dataset family that the mini suite scores meaningfully (indoor ScanNet,
# indoor S3DIS, outdoor SemanticKITTI), small enough to run with its pre-trainings in the 15-minute budget.
DEFAULT_TASKS = "scannet-semseg,s3dis-area5-semseg,semantickitti-semseg"


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _default_workers() -> int:
    from bench.distributed import usable_cpus

    return 1 if _cuda() else max(1, min(usable_cpus(), 4))


def _pretrain(args: argparse.Namespace) -> int:
    from bench.pretrain.engine import Pretrainer
    from bench.recipes import MODES, PRESETS, get_recipe
    from bench.trainer import Diverged
    from tasks.errors import DataFormatError

    if not (args.preset or args.mode):
        raise SystemExit(f"ponderbench pretrain: give --mode ({', '.join(MODES)}) for a reference recipe, or --preset "
                         f"({', '.join(sorted(PRESETS))})")
    preset = args.preset or args.mode
    try:
        recipe = get_recipe(preset, args.overrides)
    except (KeyError, ValueError) as exc:
        raise SystemExit(f"ponderbench pretrain: {exc}") from exc
    if args.mode and recipe.mode != args.mode:
        raise SystemExit(f"ponderbench pretrain: preset {preset!r} is for mode {recipe.mode!r}, not {args.mode!r}")
    run_dir = Path(args.out or f"results/runs/pretrain/{preset}-{recipe.backbone.replace(':', '_')}")
    try:
        result = Pretrainer(recipe, args.data, run_dir, args.device, resume=args.resume,
                            progress=not args.no_progress).run()
    except (Diverged, DataFormatError) as exc:  # a diverged run; a data or checkpoint file refused, named
        raise SystemExit(f"ponderbench pretrain: {exc}") from exc
    if result.export is None:  # not rank 0
        return 0
    rows = [{"loss": k, "first": result.first_losses.get(k), "last": v} for k, v in result.last_losses.items()]
    print(pd.DataFrame(rows).to_string(index=False))
    if result.heldout_depth_error_before is not None:
        print(f"held-out median depth error: {result.heldout_depth_error_before:.4f} m -> "
              f"{result.heldout_depth_error_after:.4f} m")
    print(f"{result.steps} steps; backbone exported to {result.export} (+ backbone.json); run folder {run_dir}")
    return 0


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _usage_error(command: str, exc: Exception) -> int:
    """A name that does not resolve: say so and exit 2, before any work."""
    print(f"ponderbench {command}: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
    return 2


def _expand(args: argparse.Namespace, backbones: list[str]) -> list:
    """The runs the arguments describe; every name resolved (raises KeyError/ValueError/FileNotFoundError)."""
    from bench.matrix.runner import expand
    from tasks.io import check_writable

    runs = expand(backbones=backbones, inits=_csv(args.inits), tasks=args.tasks,
                  seeds=[int(s) for s in _csv(args.seeds)], data_roots=tuple(_csv(args.data)), results=args.results,
                  preset=args.preset, overrides=args.overrides, protocols=_csv(args.protocols), device=args.device,
                  tta=args.tta, plugins=_plugin_paths(args.plugin), claim_timeout_s=args.claim_timeout)
    check_writable(Path(args.results), "results folder")  # after the names: a typo leaves no folder behind
    return runs


def _execute(args: argparse.Namespace, runs: list) -> list:
    """Run the matrix (first generating what the runs read of the mini suite, when it is the default data root and
    lacks it); print the counts."""
    from bench import distributed
    from bench.matrix.records import RUNNING_ELSEWHERE
    from bench.matrix.runner import datasets_read, run_matrix, wait_for_elsewhere

    ranks, _ = distributed.setup(args.device)  # under torchrun: join the others (the main rank writes)
    if args.data == DEFAULT_DATA and ranks.main:
        from tasks.synth.suite import DATASETS, synthesize

        read = datasets_read(runs)
        missing = [d for d in DATASETS if d in read and not (Path(DEFAULT_DATA) / d).is_dir()]
        if missing:
            print(f"generating the mini suite's {', '.join(missing)} in {DEFAULT_DATA} (what the chosen tasks read)")
            synthesize(DEFAULT_DATA, "mini", seed=0, progress=not args.no_progress, datasets=missing,
                       workers=args.workers)
    distributed.barrier(ranks)
    # --gpus-per-node N: each run is one job of N tasks, one per GPU, training data-parallel
    slurm = {k: v for k, v in {"slurm_partition": args.slurm_partition, "gpus_per_node": args.gpus_per_node,
                               "tasks_per_node": args.gpus_per_node, "timeout_min": args.timeout_min,
                               "cpus_per_task": args.cpus_per_task}.items() if v}
    started = time.time()  # a record another process writes from now on is this command's result too (--wait)
    runs = [replace(run, started=started) for run in runs]
    records = run_matrix(runs, args.executor, args.workers, args.overwrite, slurm,
                         progress=not args.no_progress and ranks.main)
    away = sum(r.status == RUNNING_ELSEWHERE for r in records)
    if args.wait and away:
        if ranks.main:
            print(f"waiting for {away} runs running elsewhere (claims beside their records)")
        records = wait_for_elsewhere(runs, records, args.executor, args.workers, args.overwrite, slurm)
    if not ranks.main:
        return records
    counts = pd.Series([r.status for r in records]).value_counts().to_dict()
    print(f"{len(records)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if RUNNING_ELSEWHERE in counts:
        print(f"  {counts[RUNNING_ELSEWHERE]} runs are claimed by other processes sharing {args.results}: not done "
              "here; --wait waits for them")
    for r in records:
        if r.status == "failed":
            print(f"  FAILED {r.task} {r.backbone} {r.init} seed {r.seed}: "
                  f"{(r.error or '').strip().splitlines()[-1]}")
    return records


def _run(args: argparse.Namespace) -> int:
    from bench import distributed
    from bench.matrix.leaderboard import leaderboard
    from bench.matrix.results import ResultsError

    try:
        runs = _expand(args, _csv(args.backbones))
    except (KeyError, ValueError, FileNotFoundError) as exc:
        return _usage_error("run", exc)
    _execute(args, runs)
    if not distributed.current().main:
        return 0
    try:
        tables = leaderboard(Path(args.results))
    except ResultsError as exc:
        raise SystemExit(f"ponderbench run: the runs are done, but the tables cannot be made: {exc}") from exc
    if "overall" in tables:
        print(tables["overall"].to_string(index=False))
    print(f"tables written to {Path(args.results) / 'tables'}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from bench.matrix.compare import paired
    from bench.matrix.leaderboard import write_tables
    from bench.matrix.records import RUNNING_ELSEWHERE
    from bench.matrix.results import ResultsError, load_results
    from bench.perf.cost import measure_in_fresh_process

    if args.new == args.against:
        return _usage_error("compare", ValueError(f"compare {args.new!r} with another backbone"))
    try:
        runs = _expand(args, [args.new, args.against])
    except (KeyError, ValueError, FileNotFoundError) as exc:
        return _usage_error("compare", exc)
    records = _execute(args, runs)
    if any(r.status == RUNNING_ELSEWHERE for r in records):
        raise SystemExit("ponderbench compare: some runs are running in another process; the paired table needs "
                         "them all: re-run with --wait")
    try:
        frame = load_results(args.results)
    except ResultsError as exc:
        raise SystemExit(f"ponderbench compare: the runs are done, but the table cannot be made: {exc}") from exc
    wanted = {(r.task, r.backbone, r.init, r.protocol, r.seed) for r in runs}
    frame = frame[[k in wanted for k in zip(frame.task, frame.backbone, frame.init, frame.protocol, frame.seed,
                                            strict=True)]]
    scores = paired(frame, args.new, args.against)
    cost = pd.DataFrame([{"backbone": name, **measure_in_fresh_process(name, _plugin_paths(args.plugin))}
                         for name in (args.new, args.against)])
    name = f"compare_{args.new}_vs_{args.against}".replace(":", "_").replace("/", "_")
    out = Path(args.results) / "tables"
    write_tables({name: scores, f"{name}_cost": cost}, out, ("md", "csv"))
    print(f"## {args.new} vs {args.against}: mean ± std over seeds (%), paired differences {args.new} - "
          f"{args.against}\n{scores.to_string(index=False)}\n")
    shown = cost.to_string(index=False, float_format="{:,.0f}".format)
    print(f"## cost (forward + backward on a generated room; memory a step adds, MiB)\n{shown}")
    print(f"tables written to {out / name}.md / .csv")
    return 0


def _plugin_paths(plugins: list[str]) -> tuple[str, ...]:
    """Plugin files as absolute paths (worker processes and Slurm jobs may run elsewhere); module names as given."""
    from backbones.registry import is_plugin_file

    return tuple(str(Path(p).resolve()) if is_plugin_file(p) else p for p in plugins)


def _features(args: argparse.Namespace) -> int:
    from bench.finetune.features import feature_probe
    from tasks.spec import get_task

    try:
        spec = get_task(args.task)
        rows = [{"init": init, **feature_probe(spec, args.backbone, args.data, init=None if init == "random" else init,
                                               seed=args.seed, scenes=args.scenes, device=args.device)}
                for init in _csv(args.inits)]
    except (KeyError, ValueError, FileNotFoundError) as exc:
        return _usage_error("features", exc)
    print(pd.DataFrame(rows).round(3).to_string(index=False))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    """Score a released fine-tuned checkpoint on a task's evaluation split; one record, protocol ``evaluate``."""
    from bench.matrix.evaluate import evaluate_checkpoint

    try:
        record = evaluate_checkpoint(args.checkpoint, args.task, tuple(_csv(args.data)), args.results, tta=args.tta,
                                     backbone=args.backbone, device=args.device)
    except (OSError, KeyError, ValueError) as exc:
        return _usage_error("evaluate", exc)
    print(f"{record.task} {record.main_score} {100 * record.main_value:.1f} "
          f"({record.backbone}, {record.facts['head']} head; record under {args.results})")
    return 0


def _detect(args: argparse.Namespace) -> int:
    """Run a trained detector on one real sample and draw it: BEV over the points, boxes in CAM_FRONT."""
    import torch

    from bench.finetune.detection import detect, load_detector, sample_boxes
    from bench.finetune.plots import plot_boxes_on_camera, plot_detections
    from tasks.formats.nuscenes import read_mmdet3d_info

    try:
        model, config = load_detector(args.model)
        sample = read_mmdet3d_info(args.sample, args.index)
    except (OSError, KeyError, ValueError) as exc:
        return _usage_error("detect", exc)
    if "camera" in config.sensors and len(sample.cameras) != 6:
        return _usage_error("detect", ValueError(f"{args.sample}: the detector reads 6 cameras, the sample has "
                                                 f"{len(sample.cameras)}"))
    predicted = detect(model, config, sample, torch.device(args.device))
    out = Path(args.out)
    truth = sample_boxes(sample, training=False)
    plot_detections(sample, predicted, out / "bev.png", f"{Path(args.model).parent.name}: sample {sample.token[:8]}",
                    min_score=args.min_score)
    shown = predicted.select(predicted.scores >= args.min_score)
    plot_boxes_on_camera(sample, sample.cameras.index("CAM_FRONT"), [(truth, "limegreen"), (shown, "red")],
                         out / "cam_front.png", "CAM_FRONT: ground truth (green), predicted (red)")
    print(f"{len(truth)} ground-truth boxes, {len(shown)} predicted with score >= {args.min_score} "
          f"({len(predicted)} in all); pictures in {out}")
    return 0


def _leaderboard(args: argparse.Namespace) -> int:
    from bench.matrix.leaderboard import LeaderboardError, leaderboard

    roots = tuple(Path(r) for r in _csv(args.results))
    try:
        tables = leaderboard(roots, Path(args.out) if args.out else None, tuple(_csv(args.format)))
    except (LeaderboardError, ValueError) as exc:
        raise SystemExit(f"ponderbench leaderboard: {exc}") from exc
    for name in ("overall", "gain", "status"):
        if name in tables:
            print(f"## {name}\n{tables[name].to_string(index=False)}\n")
    return 0


def _runs_show(args: argparse.Namespace) -> int:
    from bench.runlog import METRICS, read_run_log

    folder = Path(args.run)
    if not folder.is_dir():
        runs = Path(args.results) / "runs"  # fine-tunes, pre-trainings and the low-level tasks' fits
        found = sorted(p for p in runs.glob(f"*/{args.run}") if (p / METRICS).is_file()) if runs.is_dir() else []
        if len(found) != 1:
            names = "; matches: " + ", ".join(p.name for p in found) if found else ""
            return _usage_error("runs show", ValueError(f"{args.run!r} names {len(found)} runs with a log under "
                                                        f"{runs}{names}"))
        folder = found[0]
    if not (folder / METRICS).is_file():
        return _usage_error("runs show", FileNotFoundError(f"{folder / METRICS}: no run log there"))
    table = read_run_log(folder / METRICS)
    print(f"{folder}\n{table.dropna(axis=1, how='all').to_string(index=False)}")
    return 0


def _runs_heldout(args: argparse.Namespace) -> int:
    from bench.pretrain.heldout import draw_heldout

    try:
        result = draw_heldout(args.run, args.out, args.data, args.rows, args.device)
    except ValueError as exc:  # DataFormatError included: a missing or refused file, named
        return _usage_error("runs heldout", exc)
    print(f"held-out median |depth error|: {result.before:.3f} m before, {result.after:.3f} m after; {result.picture}")
    return 0


def _claim_timeout(text: str) -> float:
    seconds = float(text)
    if not seconds >= MIN_STALE_AFTER_S:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_STALE_AFTER_S:g} s, got {text}")
    return seconds


def _matrix_parser(seeds: str, inits: str, protocols: str) -> argparse.ArgumentParser:
    """The options run and compare share (a parser of its own for each: parents share their actions)."""
    from bench.recipes import FINETUNE_PRESETS

    matrix = argparse.ArgumentParser(add_help=False)
    matrix.add_argument("--data", default=DEFAULT_DATA, help="data root(s), comma-separated; each task uses the "
                                                             f"first that holds its dataset (default: {DEFAULT_DATA}, "
                                                             "generated when missing)")
    matrix.add_argument("--inits", default=inits,
                        help="scratch, ponder (pre-train first, or reuse the export in RESULTS) or export paths")
    matrix.add_argument("--tasks", default=DEFAULT_TASKS,
                        help="comma-separated wildcard patterns (`ponderbench list tasks`); default: the "
                             f"representative subset {DEFAULT_TASKS}; '*' runs the full matrix")
    matrix.add_argument("--seeds", default=seeds, help="comma-separated seeds")
    matrix.add_argument("--preset", default="mini", choices=sorted(FINETUNE_PRESETS),
                        help="fine-tuning recipe (and the pre-training recipe of the ponder init)")
    matrix.add_argument("--protocols", default=protocols,
                        help="comma-separated: finetune (backbone + head trained) and/or probe (a linear head on the "
                             "frozen backbone; the scratch init is then named random: frozen random weights)")
    matrix.add_argument("--tta", action="store_true", help="test-time augmentation: vote over four rotations")
    matrix.add_argument("--results", default="results", help="results folder (records, pre-training, tables)")
    matrix.add_argument("--device", default="cuda" if _cuda() else "cpu")
    matrix.add_argument("--executor", default="local", choices=("local", "slurm", "debug"),
                        help="local processes, Slurm through submitit, or submitit's in-process debug executor")
    matrix.add_argument("--workers", type=int, default=_default_workers(),
                        help="local: parallel processes (default: one per CPU core, at most 4, each on one thread; "
                             "1 with a GPU). Small sparse nets use one core far better than two")
    matrix.add_argument("--overwrite", action="store_true", help="redo runs that already have an ok record")
    matrix.add_argument("--wait", action="store_true",
                        help="when another process sharing RESULTS is running some of the runs, wait for them (and "
                             "take over those whose owner died) before writing the tables")
    matrix.add_argument("--claim-timeout", type=_claim_timeout, default=STALE_AFTER_S, metavar="SECONDS",
                        help="a run or pre-training claimed by a process that has not shown a heartbeat for this "
                             f"long is taken over (default {STALE_AFTER_S:.0f})")
    matrix.add_argument("--slurm-partition")
    matrix.add_argument("--gpus-per-node", type=int)
    matrix.add_argument("--cpus-per-task", type=int)
    matrix.add_argument("--timeout-min", type=int, default=None)
    matrix.add_argument("--no-progress", action="store_true")
    return matrix


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    """The fine-tuning overrides: last, after a command's own positionals."""
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="fine-tuning recipe overrides, typed like pretrain's, e.g. epochs=20 lr=0.02 "
                             "max_points=None (`ponderbench list recipes`)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ponderbench", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    plugins = argparse.ArgumentParser(add_help=False)
    plugins.add_argument("--plugin", action="append", default=[], metavar="FILE_OR_MODULE",
                         help="import this .py file or dotted module first, for the backbones, task types and tasks it "
                              "registers (repeatable; worker processes and Slurm jobs import it too)")

    data = sub.add_parser("data", help="generate and validate datasets").add_subparsers(dest="action", required=True)
    synth = data.add_parser("synth", help="write the embedded mini datasets in their real on-disk formats")
    synth.add_argument("--root", help="output folder (default: data/<suite>)")
    synth.add_argument("--suite", default="mini", choices=("mini", "tiny"), help="size preset (default: mini)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--datasets", help="comma-separated subset of scannet, s3dis, semantickitti, nuscenes "
                                          "(default: all)")
    synth.add_argument("--workers", type=int, default=_default_workers(), help="parallel processes")
    synth.add_argument("--no-progress", action="store_true", help="no progress bar")
    synth.add_argument("--size", action="append", default=[], metavar="KEY=VALUE",
                       help="override a size of the suite, e.g. --size 'scannet_scenes=(4,2,1)' "
                            "--size lidar_azimuths=512 (fields: `ponderbench list suites`)")
    synth.set_defaults(func=_data_synth)
    check = data.add_parser("check", help="validate a data root (real or generated) per benchmark")
    check.add_argument("root", help="folder holding scannet/, s3dis/, semantickitti/, nuscenes/")
    check.add_argument("--datasets", nargs="*", help="only these datasets")
    check.add_argument("--max-scenes", type=int, help="read at most this many scenes per split")
    check.add_argument("--require", action="append", default=[], metavar="DATASET",
                       help="fail when this dataset is absent (absent datasets are otherwise only reported)")
    check.set_defaults(func=_data_check)

    pre = sub.add_parser("pretrain", parents=[plugins], help="pre-train a backbone by neural rendering (PonderV2)",
                         description="Pre-train a backbone by rendering. Modes: indoor (3D backbone, RGB-D views), "
                                     "outdoor (3D backbone, LiDAR), image (2D backbone, multi-view images). "
                                     "Multi-GPU / multi-node: launch with torchrun.")
    pre.add_argument("--mode", choices=("indoor", "outdoor", "image"), help="the reference recipe of this mode")
    pre.add_argument("--preset", help="a named recipe instead (e.g. indoor-mini, outdoor-mini, image-mini)")
    pre.add_argument("--data", required=True, help="a ScanNet, S3DIS or Structured3D root (with RGB-D frames), an "
                                                   "RGB-D folder (7-Scenes style), a SemanticKITTI or nuScenes root, "
                                                   "or a folder of lidarseg frames; with datasets=... (PPT over "
                                                   "several datasets) the data root holding them")
    pre.add_argument("--out", help="run folder (default: results/runs/pretrain/<preset>-<backbone>)")
    pre.add_argument("--device", default="cuda" if _cuda() else "cpu")
    pre.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    pre.add_argument("--no-progress", action="store_true", help="no progress bar")
    pre.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                     help="recipe overrides, e.g. epochs=10 lr=1e-3 losses.rgb=5 backbone=spunet-micro")
    pre.set_defaults(func=_pretrain)

    matrix = _matrix_parser(seeds="0", inits="scratch,ponder", protocols="finetune,probe")
    run = sub.add_parser("run", parents=[plugins, matrix],
                         help="run the benchmark matrix (default: the mini suite's whole matrix)",
                         description="Fine-tune and evaluate backbones x inits x tasks x seeds; one JSON record per "
                                     "run under RESULTS/runs/records; finished runs are skipped. Ends with the "
                                     "leaderboard. Every name is resolved first: a typo exits 2 before any work.")
    run.add_argument("--backbones", default="spunet-mini", help="comma-separated registry names")
    _add_overrides(run)
    run.set_defaults(func=_run)

    matrix = _matrix_parser(seeds="0,1,2", inits="scratch", protocols="finetune")
    compare = sub.add_parser("compare", parents=[plugins, matrix],
                             help="compare a backbone with another",
                             description="Run what is missing for both backbones (finished runs are reused), then "
                                         "print and write a side-by-side table: mean ± std per task, the paired "
                                         "difference per seed and whether it exceeds the seed noise, and each "
                                         "backbone's parameters, throughput and peak memory.")
    compare.add_argument("new", help="the backbone to compare (e.g. one registered by --plugin)")
    compare.add_argument("--against", default="spunet-mini", help="the backbone to compare with")
    _add_overrides(compare)
    compare.set_defaults(func=_compare)

    board = sub.add_parser("leaderboard", parents=[plugins], help="tables and plots from the run records")
    board.add_argument("--results", default="results",
                       help="results folder(s), comma-separated: records of several machines are merged (a run found "
                            "twice counts once if identical; differing copies are an error naming both files)")
    board.add_argument("--out", help="output folder (default: the first RESULTS/tables)")
    board.add_argument("--format", default=",".join(("md", "csv", "html", "png")),
                       help="comma-separated subset of md,csv,html,png (default: all)")
    board.set_defaults(func=_leaderboard)

    feats = sub.add_parser("features", parents=[plugins], help="what frozen features encode (linear probes)",
                           description="Ridge probes from a frozen backbone's per-point features (BatchNorm "
                                       "statistics recomputed on the task's training scenes) to colour, normal, "
                                       "height, intensity and class: R^2 / accuracy on the evaluation scenes.")
    feats.add_argument("--task", default="scannet-semseg", help="the task whose scenes are probed")
    feats.add_argument("--data", default=DEFAULT_DATA, help="the data root holding the task's dataset")
    feats.add_argument("--backbone", default="spunet-mini")
    feats.add_argument("--inits", default="random", help="comma-separated: random and/or export paths")
    feats.add_argument("--scenes", type=int, default=8, help="training and evaluation scenes probed (each)")
    feats.add_argument("--seed", type=int, default=0)
    feats.add_argument("--device", default="cuda" if _cuda() else "cpu")
    feats.set_defaults(func=_features)

    evaluate = sub.add_parser("evaluate", parents=[plugins], help="score a released fine-tuned checkpoint",
                              description="Rebuild a fine-tuned segmentation model from its checkpoint alone "
                                          "(PonderV2 / Pointcept trainer files: PPT's language head, a segmentor's "
                                          "seg_head, the SpUNet's final layer, or PointGroup's seg_head and "
                                          "bias_head for instances) and score it on the task's "
                                          "evaluation split; writes a record with protocol evaluate.")
    evaluate.add_argument("checkpoint", help="a trainer checkpoint (model_best.pth) or a state dict")
    evaluate.add_argument("--task", required=True, help="a semantic- or instance-segmentation task (`ponderbench "
                                                         "list tasks`)")
    evaluate.add_argument("--tta", action="store_true", help="test-time augmentation: vote over four rotations")
    evaluate.add_argument("--backbone", help="the registered backbone to build (default: spunet-v1m3 for a file "
                                             "with PDNorm, else spunet-v1m1)")
    evaluate.add_argument("--data", default=DEFAULT_DATA, help="data root(s), comma-separated")
    evaluate.add_argument("--results", default="results", help="results folder (the record goes under runs/records)")
    evaluate.add_argument("--device", default="cuda" if _cuda() else "cpu")
    evaluate.set_defaults(func=_evaluate)

    det = sub.add_parser("detect", parents=[plugins], help="draw a trained detector's boxes on a real sample",
                         description="Run a detector saved by a detection run (results/runs/finetune/<run>/model.pt) "
                                     "on one sample of an mmdetection3d v2 nuScenes info file; writes bev.png "
                                     "(points, ground truth, predictions) and cam_front.png (boxes projected).")
    det.add_argument("model", help="the run's model.pt")
    det.add_argument("--sample", required=True, help="an mmdet3d v2 info .pkl, its files beside it")
    det.add_argument("--index", type=int, default=0, help="which sample of the info file")
    det.add_argument("--out", default="detections", help="folder for the pictures")
    det.add_argument("--min-score", type=float, default=0.2, help="predicted boxes drawn from this score up")
    det.add_argument("--device", default="cuda" if _cuda() else "cpu")
    det.set_defaults(func=_detect)

    runs = sub.add_parser("runs", help="inspect training runs").add_subparsers(dest="action", required=True)
    show = runs.add_parser("show", help="print a run's log (loss terms, lr, steps/s per interval; evaluation scores)")
    show.add_argument("run", help="the run's folder, or its name (wildcards) under RESULTS/runs/{finetune,pretrain,"
                                  "fits}")
    show.add_argument("--results", default="results")
    show.set_defaults(func=_runs_show)
    held = runs.add_parser("heldout", help="draw a pre-training run's held-out depth: real, rendered by its initial "
                                           "weights (from its seed) and by its checkpoint")
    held.add_argument("run", help="the pre-training run's folder")
    held.add_argument("--out", help="the picture (default: RUN/renders/heldout.png)")
    held.add_argument("--data", help="where the run's data is now, if not where it was")
    held.add_argument("--rows", type=int, default=3, help="held-out views or sweeps drawn, evenly spread")
    held.add_argument("--device", default="cuda" if _cuda() else "cpu")
    held.set_defaults(func=_runs_heldout)

    lister = sub.add_parser("list", parents=[plugins], help="list what the suite knows")
    lister.add_argument("what", choices=("backbones", "datasets", "suites", "tasks", "recipes"))
    lister.add_argument("pattern", nargs="?", default="*", help="wildcard filter for backbones, e.g. 'spunet*'")
    lister.add_argument("--task", help="recipes: this task's fine-tuning recipe under --preset, each value with its "
                                       "source")
    lister.add_argument("--preset", default="reference", help="recipes: the fine-tuning preset for --task")
    lister.add_argument("--pretrain", help="recipes: this pre-training preset (indoor, outdoor-mini ...), each value "
                                           "with its source")
    lister.add_argument("--format", choices=("table", "json"), default="table")
    lister.set_defaults(func=_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure(args.verbose)
    if getattr(args, "plugin", None):
        from backbones.registry import load_plugin

        try:
            for plugin in _plugin_paths(args.plugin):
                load_plugin(plugin)
        except (ImportError, FileNotFoundError, ValueError) as exc:
            return _usage_error(args.command, exc)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
