"""``fetalgan`` command line: parse, call one function, print. Heavy imports stay inside the
functions that need them so ``fetalgan --help`` and config errors are instant.

User errors (bad config, missing files, bad values) print ``fetalgan: error: ...`` and exit 2;
set ``FETALGAN_DEBUG=1`` to see the traceback instead.

Python logging is configured here, once: WARNING by default, ``-v`` INFO, ``-vv`` DEBUG, or
``--log-level`` (on ``fetalgan sweep``); MLflow's, Ray's and Optuna's loggers follow it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"  # name: fetalgan.data.cache, ...
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def log_level(args: argparse.Namespace) -> int:
    """``--log-level``, else WARNING, INFO with ``-v``, DEBUG with ``-vv``."""
    if getattr(args, "log_level", None):
        return logging.getLevelName(args.log_level)
    verbose = getattr(args, "verbose", 0) or 0
    return (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]


def configure_logging(level: int) -> None:
    """Python logging for the command: fetalgan's loggers (and the libraries' that follow the
    root's level) at ``level``, each line naming its logger."""
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt="%H:%M:%S")


def cmd_train(args: argparse.Namespace) -> int:
    from fetalgan.config import load_objective, load_train
    from fetalgan.train import train

    cfg = load_train(args.config, args.set)
    objective = load_objective(args.config) if _is_sweep_file(args.config) else None
    schedule = _replay_schedule(args)
    if schedule:
        from fetalgan.config import with_overrides

        cfg = with_overrides(cfg, schedule[0]["config"])  # the lineage's start (and a check)
        print(
            f"fetalgan train: replaying a schedule of {len(schedule)} segment(s): "
            + "; ".join(
                f"from epoch {seg['epoch']}: "
                + " ".join(f"{k}={_shown(v)}" for k, v in seg["config"].items())
                for seg in schedule
            ),
            file=sys.stderr,
        )
    evaluation = train(
        cfg,
        resume=args.resume,
        run_dir=args.out,
        progress=not args.quiet,
        objective=objective,
        schedule=schedule,
    )
    print(json.dumps({"epoch": evaluation.epoch, **evaluation.metrics()}, indent=2))
    return 0


def _shown(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _replay_schedule(args: argparse.Namespace) -> list[dict] | None:
    """``--replay RUN_ID`` (a PBT/PB2 trial run: its lineage's schedule from MLflow) or
    ``--replay-schedule FILE`` (``[{"epoch": 0, "config": {...}}, ...]``); the schedule is
    also written to ``--out``'s ``schedule.json``... by train's caller: here, None if neither."""
    if args.replay and args.replay_schedule:
        raise ValueError("--replay and --replay-schedule: give one of them")
    if args.replay:
        from fetalgan.tracking.queries import pbt_schedule

        return pbt_schedule(args.replay, tracking_uri=args.tracking_uri)
    if args.replay_schedule:
        path = Path(args.replay_schedule)
        if not path.is_file():
            raise FileNotFoundError(f"--replay-schedule {path}: not found")
        try:
            schedule = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"--replay-schedule {path}: not JSON ({err})") from None
        if not isinstance(schedule, list) or not all(
            isinstance(seg, dict) and isinstance(seg.get("epoch"), int)
            and isinstance(seg.get("config"), dict) for seg in schedule
        ):  # fmt: skip
            raise ValueError(
                f'--replay-schedule {path}: expected [{{"epoch": 0, "config": {{"lr_g": ...}}}}, '
                "...], a list of segments with an integer epoch and a config"
            )
        return schedule
    return None


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


def _train_split(text: str) -> bool:
    """``--train-split``: the FETAL_PLANES_DB Train column, 1/true or 0/false."""
    flags = {"1": True, "true": True, "0": False, "false": False}
    if text.lower() not in flags:
        raise argparse.ArgumentTypeError(f"expected 1 (train rows) or 0 (test rows), got {text!r}")
    return flags[text.lower()]


DATA_TOOLS = ("fetch", "check", "dicom", "nifti")  # fetalgan.data modules with add_cli(sub)


def _add_data_tools(data_sub) -> None:
    """``fetalgan data fetch|check|import-dicom|import-nifti``: each module registers its own
    sub-command (their heavy imports happen when the command runs)."""
    import importlib

    for name in DATA_TOOLS:
        module = importlib.import_module(f"fetalgan.data.{name}")
        module.add_cli(data_sub)


def cmd_examples(args: argparse.Namespace) -> int:
    from fetalgan.examples import copy_examples

    written = copy_examples(args.dir, force=args.force)
    for path in written:
        print(path)
    print(
        f"copied {len(written)} example files to {args.dir}; e.g. "
        f"`fetalgan sweep {Path(args.dir) / 'sweeps' / 'demo.yaml'}`"
    )
    return 0


class _VersionAction(argparse.Action):
    """``--version``: the installed package's version (pyproject.toml's), read only when asked."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from fetalgan import __version__

        print(f"fetalgan {__version__}")
        parser.exit()


def add_planes_filters(p: argparse.ArgumentParser) -> None:
    """``--plane``, ``--brain-plane``, ``--machine``, ``--train-split``: FETAL_PLANES_DB's
    row filters on a command that reads a dataset (``data.plane`` ... of a sweep file)."""
    p.add_argument("--plane", help="planes: Plane column, e.g. 'Fetal brain'")
    p.add_argument("--brain-plane", help="planes: Brain_plane column, e.g. Trans-cerebellum")
    p.add_argument("--machine", help="planes: US_Machine column, e.g. 'Voluson E6'")
    p.add_argument(
        "--train-split",
        type=_train_split,
        metavar="1|0",
        help="planes: Train column, 1 (training rows) or 0 (test rows); default both",
    )


def _add_real_options(
    p: argparse.ArgumentParser, *, required: bool, real_help: str, fit_help: str
) -> None:
    """``--real`` and what it is: a folder or a dataset, its planes filters and ``--fit``."""
    from fetalgan.config import FITS, REAL_KINDS

    p.add_argument("--real", required=required, help=real_help)
    p.add_argument(
        "--real-kind",
        default="auto",
        choices=REAL_KINDS,
        help="what --real is: hc18 (its training_set/*_HC.png, masks left out), planes "
        "(FETAL_PLANES_DB: the CSV's rows, filtered), folder (every image in it); auto "
        "(default): hc18 or planes when the folder looks like one, else folder",
    )
    add_planes_filters(p)
    p.add_argument("--fit", choices=FITS, help=fit_help)


def _real_set(args: argparse.Namespace, fit: str):
    """The real set ``--real`` and its options name (a DataConfig); says on stderr which kind
    ``--real-kind auto`` picked."""
    from fetalgan.data.datasets import KIND_SIGNS, real_data

    real = real_data(
        args.real,
        kind=args.real_kind,
        fit=fit,
        plane=args.plane,
        brain_plane=args.brain_plane,
        machine=args.machine,
        train_split=args.train_split,
    )
    if args.real_kind == "auto":
        print(
            f"fetalgan: --real {args.real}: {real.kind} ({KIND_SIGNS[real.kind]}); "
            "--real-kind chooses another",
            file=sys.stderr,
        )
    return real


def cmd_evaluate(args: argparse.Namespace) -> int:
    from fetalgan.evaluate import evaluate_folders, format_table

    _output_file(args.json, "--json")
    if args.paired:  # translations against their ground truth, by file name
        return _evaluate_paired(args)
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    result = evaluate_folders(
        _real_set(args, args.fit or "crop"),
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


def refuse_given(options: dict[str, object], why: str) -> None:
    """ValueError naming the first of ``options`` (option -> given?) that was given, and why it
    does not apply."""
    given = [option for option, value in options.items() if value]
    if given:
        raise ValueError(f"{given[0]}: {why}")


def _evaluate_paired(args: argparse.Namespace) -> int:
    from fetalgan.evaluate import evaluate_paired, format_paired

    dataset_options = {
        "--real-kind": args.real_kind != "auto",
        "--plane": args.plane,
        "--brain-plane": args.brain_plane,
        "--machine": args.machine,
        "--train-split": args.train_split is not None,
        "--fit": args.fit,
    }
    refuse_given(
        dataset_options,
        "not used with --paired (--real is a folder of ground truth, one image of each --fake "
        "image's name and size)",
    )
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

    # fetalgan's progress always; Ray's own output from INFO on, Tune's most verbose at DEBUG
    level = log_level(args)
    verbose = 3 if level <= logging.DEBUG else 2 if level <= logging.INFO else 1
    summary = run_sweep(
        args.config,
        resume=args.resume,
        storage=args.storage,
        tracking_uri=args.tracking_uri,
        overrides=args.set,
        verbose=verbose,
    )
    if summary["interrupted"]:
        return 3  # state saved: `fetalgan sweep FILE --resume` continues it
    return 0 if summary["best"] is not None else 1  # 1: no trial produced the metric


def cmd_best(args: argparse.Namespace) -> int:
    from fetalgan.tracking import best_run

    best = best_run(args.experiment, tracking_uri=args.tracking_uri)
    if args.json:
        print(json.dumps(best, indent=2))
        return 0
    if best.get("selection"):
        print(format_selected(best))
    else:
        print(
            f"best run {best['run_id']} ({best['run_name']}): best {best['metric']} = "
            f"{best['value']:.4g} ({best['mode']}imum over its evaluations)"
        )
    print(f"checkpoint: {best['checkpoint_uri']}")
    if best.get("pbt"):  # the params are its starting values; PBT changed them since
        pbt = best["pbt"]
        shown = " ".join(f"{k}={_shown(v)}" for k, v in pbt["values"].items())
        print(
            f"PBT: at epoch {pbt['epoch']} it trained with {shown}, after {pbt['exploits']} "
            f"exploit(s); the params below are its starting values. Its schedule from scratch: "
            f"fetalgan train SWEEP.yaml --replay {best['run_id']}"
        )
    for key, value in sorted(best["params"].items()):
        print(f"  {key} = {value}")
    return 0


def format_selected(best: dict) -> str:
    """The three numbers of a selected generator, side by side, each saying what it is."""
    chosen, test = best["selection"], best["test"]

    def pm(record: dict) -> str:
        return f"{record['value']:.4g} +- {record['std']:.2g}"

    real = f" against {test['n_real']} held-out images" if test.get("n_real") else ""
    rows = [
        (f"in-sweep {best['metric']}", f"{best['value']:.4g}" if best["value"] is not None
         else "n/a", "the lowest of its run's evaluations during the sweep, on few fakes: "
         "biased, not for reporting"),
        (f"selection {chosen['metric']}", pm(chosen), f"{chosen['draws']} x {chosen['n_fake']} "
         f"fresh fakes against select.reference; chose it among {chosen['candidates']} "
         "candidates"),
        (f"test {test['metric']}", pm(test), f"{test['draws']} x {test['n_fake']} fakes{real} "
         "(select.test_reference), which played no part in choosing it: report this one"),
    ]  # fmt: skip
    width = max(len(name) for name, _, _ in rows)
    number = max(len(value) for _, value, _ in rows)
    lines = [
        f"best run {best['run_id']} ({best['run_name']}), epoch {best['epoch']}: chosen by the "
        "sweep's final selection"
    ]
    lines += [f"  {name:<{width}}  {value:<{number}}  {what}" for name, value, what in rows]
    return "\n".join(lines)


def cmd_select(args: argparse.Namespace) -> int:
    from fetalgan.sweep.select import select_sweep

    result = select_sweep(
        args.experiment,
        overrides=args.set,
        parent_run_id=args.parent,
        tracking_uri=args.tracking_uri,
        selection_dir=args.cache,
    )
    if result.get("registered_version"):
        print(
            f"registered model: models:/{args.experiment}@best "
            f"(version {result['registered_version']})"
        )
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
        _real_set(args, args.fit or "crop"),
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
    from fetalgan.study import store
    from fetalgan.study.analyse import analyse, format_summary, study_fit

    _output_file(args.json, "--json")
    real = None
    if args.real:
        fit = args.fit
        if fit is None:  # the reference is brought to the study's side as its images were
            conn = store.connect(args.study)
            try:
                fit = study_fit(conn)
            finally:
                conn.close()
        real = _real_set(args, fit)
    result = analyse(
        args.study,
        metrics_from=args.metrics_from,
        tracking_uri=args.tracking_uri,
        real=real,
        with_image_metrics=not args.no_image_metrics,
        rater=args.rater,
        out=args.out,
        json_path=args.json,
    )
    print(format_summary(result))
    return 0


def _add_checkpoint_source(p) -> None:
    """Where a command's generator comes from: a file, a sweep's best run or a run."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="checkpoint file or directory")
    src.add_argument("--best", metavar="EXPERIMENT", help="the best run of this MLflow experiment")
    src.add_argument("--run", metavar="RUN_ID", help="this MLflow run's checkpoint")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fetalgan",
        description="Generative models of fetal ultrasound images: train, sweep, generate, evaluate.",
    )
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_sweep(sub)
    _add_best(sub)
    _add_select(sub)
    _add_generate(sub)
    _add_evaluate(sub)
    _add_translate(sub)
    _add_data(sub)
    _add_examples(sub)
    _add_report(sub)
    _add_study(sub)
    return parser


def _add_train(sub) -> None:
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
    p.add_argument(
        "--replay",
        metavar="RUN_ID",
        help="retrain a PBT/PB2 trial's lineage from scratch: its hyper-parameter schedule "
        "(from its sweep's pbt_lineage.json) as one run; --set epochs=N trains longer",
    )
    p.add_argument(
        "--replay-schedule",
        metavar="FILE",
        help='a schedule as JSON: [{"epoch": 0, "config": {"lr_g": 2e-4}}, {"epoch": 20, ...}]',
    )
    p.add_argument("--tracking-uri", help="MLflow tracking URI (with --replay)")
    p.set_defaults(func=cmd_train)


def _add_sweep(sub) -> None:
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
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="also Ray's own output (Tune's status table, the trials' output and Ray's, "
        "MLflow's and fetalgan's INFO lines); -vv: DEBUG lines and Tune at its most verbose",
    )
    p.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        help="logging level (default WARNING: fetalgan's progress table, stops, failures and "
        "summary only); INFO is -v, DEBUG is -vv",
    )
    p.set_defaults(func=cmd_sweep)


def _add_best(sub) -> None:
    p = sub.add_parser("best", help="the best run of a sweep's MLflow experiment")
    p.add_argument("experiment", help="experiment name (the sweep's `name`)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--tracking-uri", help="MLflow tracking URI")
    p.set_defaults(func=cmd_best)


def _add_select(sub) -> None:
    p = sub.add_parser(
        "select",
        help="run a finished sweep's final selection (again): re-score its top trials on "
        "fresh fakes, score the winner on the test reference, move the best alias",
    )
    p.add_argument("experiment", help="experiment name (the sweep's `name`)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override the sweep's select section, e.g. --set select.top_k=5 "
        "--set select.n_fake=2048 --set select.metric=kid_mean",
    )
    p.add_argument("--parent", metavar="RUN_ID", help="the sweep run (default: the latest)")
    p.add_argument("--cache", metavar="DIR", help="score cache folder (default: the sweep's)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI")
    p.set_defaults(func=cmd_select)


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="write images from a trained generator")
    _add_checkpoint_source(p)
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


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="FID, KID, PSNR, MI, SSIM, LBPv of fakes against reals")
    _add_real_options(
        p,
        required=True,
        real_help="real images: a folder, the HC18 folder (data/hc18) or FETAL_PLANES_DB's "
        "(data/planes); see --real-kind",
        fit_help="how each real image becomes the fakes' square size, as data.fit in training: "
        "crop (default: short side resized, centre crop), squash (whole image, aspect ratio "
        "ignored: the seed studies), pad (letterboxed with black)",
    )
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


def _add_translate(sub) -> None:
    p = sub.add_parser("translate", help="US images -> MR-like images (us2mri, cyclegan)")
    _add_checkpoint_source(p)
    p.add_argument("--in", dest="in_dir", required=True, help="folder of US images")
    p.add_argument("--out", required=True, help="output folder: one PNG per input, same name")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--tracking-uri", help="MLflow tracking URI (with --best/--run)")
    p.set_defaults(func=cmd_translate)


def _add_data(sub) -> None:
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
    _add_data_tools(data_sub)


def _add_examples(sub) -> None:
    p = sub.add_parser(
        "examples",
        help="copy the example sweeps, slurm/ray_cluster.sh and mlflow/server.sh into a folder",
    )
    p.add_argument("dir", metavar="DIR", help="folder to copy into (created if needed)")
    p.add_argument("--force", action="store_true", help="overwrite files that already exist")
    p.set_defaults(func=cmd_examples)


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="HTML report (tables, curves, samples) of a sweep")
    p.add_argument("experiment", help="experiment name (the sweep's `name`)")
    p.add_argument("--out", help="output folder (default reports/EXPERIMENT)")
    p.add_argument("--parent", metavar="RUN_ID", help="this sweep run (default: the latest)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI")
    p.set_defaults(func=cmd_report)


def _add_study(sub) -> None:
    p = sub.add_parser("study", help="reader study: real/fake and quality ratings")
    study_sub = p.add_subparsers(dest="study_command", required=True, metavar="STEP")
    q = study_sub.add_parser("create", help="a seeded, balanced, shuffled study file")
    _add_real_options(
        q,
        required=True,
        real_help="real images: a folder, the HC18 folder (data/hc18) or FETAL_PLANES_DB's "
        "(data/planes); see --real-kind",
        fit_help="how every image becomes the shown square, as data.fit in training: crop "
        "(default), squash (whole image, aspect ratio ignored: the seed studies), pad "
        "(letterboxed with black)",
    )
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
    _add_real_options(
        q,
        required=False,
        real_help="real reference set: a folder, the HC18 folder or FETAL_PLANES_DB's "
        "(default: the study's real images)",
        fit_help="how --real images become the study's side: crop, squash, pad (default: "
        "the fit the study was made with)",
    )
    q.add_argument("--rater", help="whose scores the regression plot shows (default: mean)")
    q.add_argument("--no-image-metrics", action="store_true", help="skip LBPv/PSNR/MI")
    q.add_argument("--out", help="folder for regression.png")
    q.add_argument("--json", help="also write the results to this JSON file")
    q.add_argument("--tracking-uri", help="MLflow tracking URI")
    q.set_defaults(func=cmd_study_analyse)


def main(argv: list[str] | None = None) -> int:
    if argv is None and hasattr(signal, "SIGPIPE"):  # `fetalgan best | head`: no traceback
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = build_parser().parse_args(argv)
    configure_logging(log_level(args))
    if os.environ.get("FETALGAN_DEBUG"):
        return args.func(args)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"fetalgan: error: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:  # an optional feature's extra (fetalgan.extras.missing)
        if "pip install 'fetalgan[" not in str(err):
            raise
        print(f"fetalgan: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fetalgan: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
