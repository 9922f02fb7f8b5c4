"""``fetalgan`` command line: parse, call one function, print. Heavy imports stay inside the
functions that need them so ``fetalgan --help`` and config errors are instant.

User errors (bad config, missing files, bad values) print ``fetalgan: error: ...`` and exit 2;
set ``FETALGAN_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def cmd_train(args: argparse.Namespace) -> int:
    from fetalgan.config import load_objective, load_train
    from fetalgan.train import train

    cfg = load_train(args.config, args.set)
    objective = load_objective(args.config) if _is_sweep_file(args.config) else None
    evaluation = train(
        cfg,
        resume=args.resume,
        run_dir=args.out,
        progress=not args.quiet,
        objective=objective,
    )
    print(json.dumps({"epoch": evaluation.epoch, **evaluation.metrics()}, indent=2))
    return 0


def _is_sweep_file(path: str) -> bool:
    from fetalgan.config import read_yaml

    return "base" in read_yaml(path)


def _output_file(path: str | None, option: str) -> None:
    """Before any work: ``option``'s file must be writable as a file (not a folder)."""
    if path and Path(path).is_dir():
        raise ValueError(
            f"{option} {path}: is a folder; give a file name, e.g. {Path(path) / 'metrics.json'}"
        )


def _output_folder(path: str, option: str) -> None:
    """Before any work: ``option``'s folder must not be an existing file."""
    if Path(path).exists() and not Path(path).is_dir():
        raise ValueError(f"{option} {path}: exists and is not a folder; give a folder")


def cmd_generate(args: argparse.Namespace) -> int:
    from fetalgan.generate import generate

    _output_folder(args.out, "--out")
    checkpoint = args.checkpoint
    if checkpoint is None:  # --best EXPERIMENT or --run RUN_ID: pull it through MLflow
        from fetalgan.tracking import fetch_checkpoint

        checkpoint = fetch_checkpoint(
            experiment=args.best, run_id=args.run, tracking_uri=args.tracking_uri
        )
    paths = generate(
        checkpoint, args.n, args.out, seed=args.seed, batch_size=args.batch_size, device=args.device
    )
    print(f"wrote {len(paths)} images and grid.png to {args.out}")
    return 0


def cmd_data_phantom(args: argparse.Namespace) -> int:
    from fetalgan.data.phantom import write_phantom_dir

    paths = write_phantom_dir(
        args.out, n=args.n, size=args.size, seed=args.seed, modality=args.modality, first=args.first
    )
    shown = "ultrasound" if args.modality == "us" else "MR"
    print(f"wrote {len(paths)} {shown} phantom images ({args.size}x{args.size}) to {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from fetalgan.evaluate import evaluate_folders, format_table

    _output_file(args.json, "--json")
    if args.paired:  # translations against their ground truth, by file name
        return _evaluate_paired(args)
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    result = evaluate_folders(
        args.real,
        args.fake,
        metrics=metrics,
        fid_weights=args.fid_weights,
        fid_dims=args.fid_dims,
        batch_size=args.batch_size,
        device=args.device,
        seed=args.seed,
    )
    print(format_table(result))
    _write_json(args.json, result)
    return 0


def _evaluate_paired(args: argparse.Namespace) -> int:
    from fetalgan.evaluate import evaluate_paired, format_paired

    result = evaluate_paired(args.real, args.fake)
    print(format_paired(result))
    _write_json(args.json, result)
    return 0


def _write_json(path: str | None, result: dict) -> None:
    """``--json FILE``: the results as JSON too (nothing when not asked for)."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}")


def cmd_translate(args: argparse.Namespace) -> int:
    from fetalgan.translate import translate_folder

    checkpoint = args.checkpoint
    if checkpoint is None:  # --best EXPERIMENT or --run RUN_ID: pull it through MLflow
        from fetalgan.tracking import fetch_checkpoint

        checkpoint = fetch_checkpoint(
            experiment=args.best, run_id=args.run, tracking_uri=args.tracking_uri
        )
    paths = translate_folder(
        checkpoint, args.in_dir, args.out, batch_size=args.batch_size, device=args.device
    )
    print(f"wrote {len(paths)} translated images to {args.out}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from fetalgan.sweep import run_sweep

    summary = run_sweep(
        args.config,
        resume=args.resume,
        storage=args.storage,
        tracking_uri=args.tracking_uri,
        overrides=args.set,
    )
    if summary["interrupted"]:
        return 3  # state saved: `fetalgan sweep FILE --resume` continues it
    return 0 if summary["best"] is not None else 1  # 1: no trial produced the metric


def cmd_best(args: argparse.Namespace) -> int:
    from fetalgan.tracking import best_run

    best = best_run(args.experiment, tracking_uri=args.tracking_uri)
    if args.json:
        print(json.dumps(best, indent=2))
    else:
        print(
            f"best run {best['run_id']} ({best['run_name']}): best {best['metric']} = "
            f"{best['value']:.4g} ({best['mode']}imum over its evaluations)"
        )
        print(f"checkpoint: {best['checkpoint_uri']}")
        for key, value in sorted(best["params"].items()):
            print(f"  {key} = {value}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from fetalgan.report import write_report

    report = write_report(
        args.experiment, out=args.out, tracking_uri=args.tracking_uri, parent_run_id=args.parent
    )
    print(f"wrote {report['html']} ({len(report['figures'])} figures)")
    if report.get("logged_to"):
        print(f"logged to MLflow run {report['logged_to']} under report/")
    return 0


def cmd_study_create(args: argparse.Namespace) -> int:
    from fetalgan.study.store import create_study

    summary = create_study(
        args.out,
        args.real,
        args.fake,
        n=args.n,
        seed=args.seed,
        fake_runs=args.fake_run,
        resolution=args.resolution,
        fake_fraction=args.fake_fraction,
    )
    print(
        f"wrote {summary['path']}: {summary['real']} real + {summary['fake']} synthetic images "
        f"at {summary['resolution']} px (seed {summary['seed']})"
    )
    return 0


def cmd_study_serve(args: argparse.Namespace) -> int:
    from fetalgan.study.app import serve

    serve(args.study, host=args.host, port=args.port)
    return 0


def cmd_study_analyse(args: argparse.Namespace) -> int:
    from fetalgan.study.analyse import analyse, format_summary

    _output_file(args.json, "--json")
    result = analyse(
        args.study,
        metrics_from=args.metrics_from,
        tracking_uri=args.tracking_uri,
        real_dir=args.real,
        with_image_metrics=not args.no_image_metrics,
        rater=args.rater,
        out=args.out,
        json_path=args.json,
    )
    print(format_summary(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fetalgan",
        description="Generative models of fetal ultrasound images: train, sweep, generate, evaluate.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a config's `base` once, without Ray")
    p.add_argument("config", help="sweep or training YAML file")
    p.add_argument("--out", help="run directory (default runs/train-TIMESTAMP)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key, e.g. --set lr_g=1e-3 --set data.size=300",
    )
    p.add_argument("--resume", metavar="CHECKPOINT", help="continue from a checkpoint file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sweep", help="run a Ray Tune sweep tracked in MLflow")
    p.add_argument("config", help="sweep YAML file")
    p.add_argument("--resume", action="store_true", help="resume an interrupted sweep")
    p.add_argument(
        "--storage", help="Tune storage directory (default $FETALGAN_STORAGE or ./ray_results)"
    )
    p.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlruns.db)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a sweep key (max_concurrent=16, num_samples=64, scheduler.max_t=50; "
        "max_concurrent=auto fills the cluster) or a base key (lr_g=1e-3, data.size=300)",
    )
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("best", help="the best run of a sweep's MLflow experiment")
    p.add_argument("experiment", help="experiment name (the sweep's `name`)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--tracking-uri", help="MLflow tracking URI")
    p.set_defaults(func=cmd_best)

    p = sub.add_parser("generate", help="write images from a trained generator")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="checkpoint file or directory")
    src.add_argument("--best", metavar="EXPERIMENT", help="the best run of this MLflow experiment")
    src.add_argument("--run", metavar="RUN_ID", help="this MLflow run's checkpoint")
    p.add_argument("-n", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images per batch (default: by resolution, 256 up to 64 px, 64 at 128, 16 at 256)",
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--tracking-uri", help="MLflow tracking URI (with --best/--run)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("evaluate", help="FID, KID, PSNR, MI, SSIM, LBPv between two image folders")
    p.add_argument("--real", required=True, help="folder of real images")
    p.add_argument("--fake", required=True, help="folder of synthetic images")
    p.add_argument("--metrics", default="fid,kid,psnr,mi,ssim,lbpv", help="comma-separated subset")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--fid-weights", help="FID Inception weights (default: offline lookup)")
    p.add_argument("--fid-dims", type=int, default=2048, choices=(64, 192, 768, 2048))
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the real/fake pairing and KID subsets"
    )
    p.add_argument(
        "--paired",
        action="store_true",
        help="--real holds each --fake image's ground truth under the same name: SSIM, PSNR "
        "and normalised MI per pair and on average (--metrics is not used)",
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("translate", help="US images -> MR-like images (us2mri, cyclegan)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="checkpoint file or directory")
    src.add_argument("--best", metavar="EXPERIMENT", help="the best run of this MLflow experiment")
    src.add_argument("--run", metavar="RUN_ID", help="this MLflow run's checkpoint")
    p.add_argument("--in", dest="in_dir", required=True, help="folder of US images")
    p.add_argument("--out", required=True, help="output folder: one PNG per input, same name")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--tracking-uri", help="MLflow tracking URI (with --best/--run)")
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser("data", help="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="TOOL")
    q = data_sub.add_parser("phantom", help="write procedural fetal-head ultrasound (or MR) PNGs")
    q.add_argument("--n", type=int, default=999, help="number of images")
    q.add_argument("--size", type=int, default=256, help="image side in pixels")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument(
        "--modality",
        default="us",
        choices=("us", "mri"),
        help="us: ultrasound (default); mri: the same heads as T2-weighted MR (paired by name)",
    )
    q.add_argument("--first", type=int, default=0, help="index of the first image (default 0)")
    q.add_argument("--out", required=True, help="output folder")
    q.set_defaults(func=cmd_data_phantom)
    p = sub.add_parser("report", help="HTML report (tables, curves, samples) of a sweep")
    p.add_argument("experiment", help="experiment name (the sweep's `name`)")
    p.add_argument("--out", help="output folder (default reports/EXPERIMENT)")
    p.add_argument("--parent", metavar="RUN_ID", help="this sweep run (default: the latest)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("study", help="reader study: real/fake and quality ratings")
    study_sub = p.add_subparsers(dest="study_command", required=True, metavar="STEP")
    q = study_sub.add_parser("create", help="a seeded, balanced, shuffled study file")
    q.add_argument("--real", required=True, help="folder of real images")
    q.add_argument(
        "--fake", required=True, action="append", help="folder of synthetic images (repeatable)"
    )
    q.add_argument(
        "--fake-run", action="append", metavar="RUN_ID", help="MLflow run of each --fake folder"
    )
    q.add_argument("-n", type=int, default=68, help="images (default 68)")
    q.add_argument(
        "--fake-fraction",
        type=float,
        default=0.5,
        metavar="F",
        help="share of synthetic images, round(n * F) (default 0.5)",
    )
    q.add_argument("--resolution", type=int, help="shown side in px (default: the fakes')")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--out", required=True, help="study file to write (SQLite)")
    q.set_defaults(func=cmd_study_create)
    q = study_sub.add_parser("serve", help="the rating web app")
    q.add_argument("study", help="study file")
    q.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    q.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 = any free)")
    q.set_defaults(func=cmd_study_serve)
    q = study_sub.add_parser("analyse", help="rater accuracy, agreement, metric correlations")
    q.add_argument("study", help="study file")
    q.add_argument("--metrics-from", metavar="EXPERIMENT", help="MLflow experiment: FID per run")
    q.add_argument("--real", help="real reference set (default: the study's real images)")
    q.add_argument("--rater", help="whose scores the regression plot shows (default: mean)")
    q.add_argument("--no-image-metrics", action="store_true", help="skip LBPv/PSNR/MI")
    q.add_argument("--out", help="folder for regression.png")
    q.add_argument("--json", help="also write the results to this JSON file")
    q.add_argument("--tracking-uri", help="MLflow tracking URI")
    q.set_defaults(func=cmd_study_analyse)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.environ.get("FETALGAN_DEBUG"):
        return args.func(args)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"fetalgan: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fetalgan: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
