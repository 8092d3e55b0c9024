"""The ``bench`` command line: ``list``, ``show``, ``run``, ``table``, ``compare``, ``report``,
``export`` and ``demo``.

Starting it is cheap: plugins are discovered by reading their files, not importing them, so
``bench --help``, ``bench list`` and ``bench show`` never import torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.errors import BenchError, ConfigError

DEFAULT_METHODS = "*"
DEFAULT_DATASETS = "synthetic"


def _registries(include: Sequence[str]) -> None:
    from bench.data import discover_datasets
    from bench.plugins import discover

    discover(include)
    discover_datasets(include)


def _data_roots(items: Sequence[str]) -> dict[str, str]:
    roots = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--data-root expects NAME=PATH, got '{item}'")
        roots[name] = path
    return roots


def _method_listing() -> str:
    from bench.plugins import METHODS

    lines = []
    for e in METHODS.entries():
        kind = e.meta.get("kind", "?")
        lines.append(f"  {e.name:<24} {kind:<9} {e.summary}")
    return "\n".join(lines)


def _dataset_listing() -> str:
    from bench.data import DATASETS

    return "\n".join(f"  {e.name:<24} {e.obj.loader if e.obj else '':<13} {e.summary}"
                     for e in DATASETS.entries())


def build_parser(include: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The argument parser; method and data set choices come from the registries."""
    try:
        _registries(include)
        methods_help = _method_listing()
        datasets_help = _dataset_listing()
    except BenchError as exc:  # a broken plugin folder must not break --help
        methods_help = datasets_help = f"  (cannot list: {exc})"
    from bench.data.config import SPLITS

    parser = argparse.ArgumentParser(
        prog="bench", description="Benchmark weakly supervised smoke segmentation methods.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'bench COMMAND --help' for the options of a command.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--include", action="append", default=[], metavar="DIR",
                        help="extra folder of method files (*.py) and dataset files (*.toml); "
                             "repeatable; also $BENCH_INCLUDE")
    common.add_argument("--debug", action="store_true",
                        help="on an error, print the full traceback after the one-line message "
                             "(also BENCH_DEBUG=1)")

    p_list = sub.add_parser("list", parents=[common], help="list methods and data sets",
                            description="List registered methods and data sets with the first "
                                        "line of their documentation.")
    p_list.add_argument("pattern", nargs="?", default="*",
                        help="fnmatch pattern over names (default: all); an exact method name "
                             "shows its parameters, as 'bench show' does")

    p_show = sub.add_parser(
        "show", parents=[common], help="a method's parameters, defaults and profile values",
        description="Show a method's kind and documentation, and each parameter with its type, "
                    "its default and its value under each --profile (profile values < the "
                    "defaults it was registered with < your spec). A data set name shows its "
                    "file's settings.")
    p_show.add_argument("names", nargs="+", metavar="NAME", help="method or data set names")

    p_run = sub.add_parser(
        "run", parents=[common], help="run methods on data sets and write records",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run every (method, data set) cell, cache each stage, record metrics and "
                    "write <out>/leaderboard.md.",
        epilog=f"methods:\n{methods_help}\n\ndatasets:\n{datasets_help}")
    p_run.add_argument("--methods", default=DEFAULT_METHODS, metavar="SPECS",
                       help="comma-separated pipelines 'cam+refiner+...+segmenter', plugin "
                            "parameters as name[key=value,...], wildcards over names "
                            "(default: '*', every registered method)")
    p_run.add_argument("--datasets", default=DEFAULT_DATASETS, metavar="NAMES",
                       help="comma-separated data set names or wildcards (default: synthetic)")
    p_run.add_argument("--split", default="test", choices=SPLITS,
                       help="split to score (default: test); thresholds are chosen on val "
                            "(on train when scoring val)")
    p_run.add_argument("--profile", default="quick", choices=("quick", "full"),
                       help="quick: minutes on a laptop CPU; full: the paper's settings "
                            "(default: quick)")
    p_run.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                       help="where torch models run (default: auto = cuda if available)")
    p_run.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p_run.add_argument("--out", type=Path, default=Path("results"),
                       help="run folder: cache/, records/ and leaderboard.md (default: results)")
    p_run.add_argument("--data-root", action="append", default=[], metavar="NAME=PATH",
                       help="root folder of data set NAME (overrides its file and variable)")
    p_run.add_argument("--train-on", default=None, metavar="NAME",
                       help="train (and choose thresholds) on data set NAME and score every "
                            "--datasets entry: out-of-distribution runs (default: each data set "
                            "trains on itself)")
    p_run.add_argument("--limit", type=int, default=None, metavar="N",
                       help="use at most N frames per split (deterministic subset)")
    p_run.add_argument("--n-boot", type=int, default=1000,
                       help="bootstrap resamples for confidence intervals (default: 1000)")
    p_run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _cluster_arguments(p_run)

    p_status = sub.add_parser(
        "status", parents=[common], help="the state of each cell of the last run",
        description="Each cell of the last 'bench run' in a run folder: done, running, waiting "
                    "or failed (with its one-line error and its log).")
    p_status.add_argument("--out", type=Path, default=Path("results"),
                          help="run folder (default: results)")

    p_fetch = sub.add_parser(
        "fetch-weights", parents=[common], help="download the hub weights pipelines need",
        description="Download every hub weight the named pipelines need into the weights cache "
                    "($BENCH_WEIGHTS, default ~/.cache/smoke-wsss-bench/weights) and print "
                    "each file with its SHA-256. Runs read weights=hub from there first; run "
                    "this on a login node before submitting to offline compute nodes.")
    p_fetch.add_argument("--methods", default=DEFAULT_METHODS, metavar="SPECS",
                         help="pipelines as for 'bench run' (default: '*')")
    p_fetch.add_argument("--profile", default="quick", choices=("quick", "full"),
                         help="the profile the runs will use (default: quick)")

    p_table = sub.add_parser("table", parents=[common], help="render tables from records",
                             description="Render records as leaderboards, the "
                                         "out-of-distribution view, subsets, pivots or "
                                         "ablations; LaTeX ready to paste (docs/tables.md).")
    p_table.add_argument("--out", type=Path, default=Path("results"),
                         help="run folder holding records/ (default: results)")
    p_table.add_argument("--format", default="md", choices=("md", "latex", "csv"),
                         help="output format (default: md)")
    p_table.add_argument("--pivot", choices=("datasets", "metrics"), default=None,
                         help="methods as rows and data sets or metrics as columns")
    p_table.add_argument("--metric", default=None,
                         help="metric of a data set pivot (default mIoU); the headline column "
                              "of --ood and --subsets (default IoU_smoke; image level: F1)")
    p_table.add_argument("--ood", action="store_true",
                         help="out-of-distribution view: each method on the data sets it was "
                              "not trained on after its in-domain row, every metric with its "
                              "difference to in-domain (shown by default when the selected "
                              "records are all out of distribution)")
    p_table.add_argument("--subsets", nargs="?", const="columns", default=None,
                         choices=("columns", "rows"),
                         help="the named subsets of the scored split ([subsets.<split>] in the "
                              "data set file, e.g. SmokeSeg's small/medium/large smoke): one "
                              "column per subset (default) or one row per method and subset")
    p_table.add_argument("--reference", metavar="METHOD", default=None,
                         help="add each method's mIoU gap to METHOD (e.g. supervised)")
    p_table.add_argument("--ablation", metavar="PIPELINE", default=None,
                         help="one row per stage of PIPELINE: base, +stage, +stage ...")
    p_table.add_argument("--grid", metavar="PLUGIN", default=None,
                         help="one row per parameter combination of PLUGIN's runs, e.g. "
                              "'consistency' (metric x level x paradigm x lam)")
    p_table.add_argument("--grid-params", metavar="NAMES", default="",
                         help="with --grid: parameters shown first (comma list); others that "
                              "vary follow")
    p_table.add_argument("--split", default=None, choices=SPLITS, help="only this split")
    p_table.add_argument("--profile", default=None, choices=("quick", "full"),
                         help="only this profile")
    p_table.add_argument("--datasets", default=None,
                         help="only rows scored on these data sets (comma list; fnmatch "
                              "wildcards); --ood differences still use the in-domain records")
    p_table.add_argument("--methods", default=None,
                         help="only these methods (comma list; fnmatch wildcards)")
    p_table.add_argument("--weights", choices=("pretrained", "random"), default=None,
                         help="pretrained: leave out rows whose learned stages start from "
                              "random initialisation (marked † in Markdown leaderboards); "
                              "random: only those rows (records written before records named "
                              "their weights are left out by both)")
    p_table.add_argument("--output", type=Path, default=None,
                         help="write the table to this file instead of standard output")
    _table_style_arguments(p_table)

    p_cmp = sub.add_parser("compare", parents=[common],
                           help="paired bootstrap test between two methods",
                           description="Paired bootstrap over the same images: the mIoU "
                                       "difference A - B with its 95%% interval.")
    p_cmp.add_argument("method_a")
    p_cmp.add_argument("method_b")
    p_cmp.add_argument("--dataset", default="synthetic")
    p_cmp.add_argument("--split", default="test", choices=SPLITS)
    p_cmp.add_argument("--profile", default="quick", choices=("quick", "full"))
    p_cmp.add_argument("--seed", type=int, default=0)
    p_cmp.add_argument("--metric", default="mIoU")
    p_cmp.add_argument("--out", type=Path, default=Path("results"))
    _view_arguments(sub, common)
    return parser


def _view_arguments(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """``bench report``, ``bench export`` and ``bench demo`` (issue 16): looking at a run."""
    from bench.data.config import SPLITS

    p_rep = sub.add_parser(
        "report", parents=[common], help="one self-contained HTML page of a run's results",
        description="Write <out>/report.html: sortable leaderboards with 95%% intervals, a bar "
                    "chart per data set, ablation charts, spurious-correlation plots and "
                    "qualitative grids (best, median, worst and shared frames: image, ground "
                    "truth, CAM, pseudo labels, final mask), with each section's provenance. "
                    "Images are embedded; the file opens offline. Maps come from the run's "
                    "cache; a missing one is recomputed from the cached trained state (nothing "
                    "is trained) or marked missing.")
    p_rep.add_argument("--out", type=Path, default=Path("results"),
                       help="run folder (default: results)")
    p_rep.add_argument("--output", type=Path, default=None, metavar="FILE",
                       help="where to write the page (default: <out>/report.html)")
    p_rep.add_argument("--methods", default=None, metavar="PATTERNS",
                       help="only these pipelines (comma list; fnmatch wildcards)")
    p_rep.add_argument("--datasets", default=None, metavar="NAMES",
                       help="only these data sets (comma list)")
    p_rep.add_argument("--shared-frames", type=int, default=4, metavar="N",
                       help="frames every method is shown on side by side (default: 4)")
    p_rep.add_argument("--no-regenerate", action="store_true",
                       help="mark maps missing from the cache instead of recomputing them")
    p_rep.add_argument("--data-root", action="append", default=[], metavar="NAME=PATH",
                       help="root folder of data set NAME (overrides the records' roots)")

    p_exp = sub.add_parser(
        "export", parents=[common], help="write a run's masks or CAMs as PNG files",
        description="Write one PNG per frame of a split, named after the frame id as the data "
                    "set names its files (tiles stitched back into whole frames): label maps "
                    "(pseudo or final) as palette PNGs with values 0 background, 1 smoke, 255 "
                    "ignore (like VOC and SMOKE5K); CAMs as 16-bit grayscale (value / 65535). "
                    "Soft maps become labels at their record's calibrated threshold. Missing "
                    "maps are recomputed from the cached trained state; nothing is trained.")
    p_exp.add_argument("--method", required=True, metavar="PIPELINE",
                       help="the pipeline, as its records name it (e.g. effnet+crf)")
    p_exp.add_argument("--dataset", default="synthetic", help="data set (default: synthetic)")
    p_exp.add_argument("--split", default="test", choices=SPLITS,
                       help="split to export (default: test; 'train' gives the pseudo labels "
                            "a segmenter trains on)")
    p_exp.add_argument("--stage", default="final", choices=("cam", "pseudo", "final"),
                       help="cam: the last CAM source or wrapper (16-bit); pseudo: the stage a "
                            "segmenter trains on; final: the last stage (default: final)")
    p_exp.add_argument("--to", type=Path, required=True, metavar="DIR",
                       help="folder to write the PNGs into")
    p_exp.add_argument("--out", type=Path, default=Path("results"),
                       help="run folder (default: results)")
    p_exp.add_argument("--profile", default="quick", choices=("quick", "full"))
    p_exp.add_argument("--seed", type=int, default=0)
    p_exp.add_argument("--data-root", action="append", default=[], metavar="NAME=PATH",
                       help="root folder of data set NAME (overrides the records' roots)")

    p_demo = sub.add_parser(
        "demo", parents=[common], help="an interactive page (Streamlit) over a run's pipelines",
        description="Start a Streamlit page: pick a trained pipeline of the run folder, then a "
                    "frame of its data set or an uploaded image; see its CAM, pseudo labels "
                    "and final mask as overlays, with a threshold slider and per-frame scores. "
                    "It uses the cached trained models and never trains. Needs the demo "
                    "extra: pip install 'smoke-wsss-bench[demo]'.")
    p_demo.add_argument("--out", type=Path, default=Path("results"),
                        help="run folder (default: results)")
    p_demo.add_argument("--port", type=int, default=8501, help="port (default: 8501)")
    p_demo.add_argument("--data-root", action="append", default=[], metavar="NAME=PATH",
                        help="root folder of data set NAME (overrides the records' roots)")


def _table_style_arguments(p_table: argparse.ArgumentParser) -> None:
    """How ``bench table`` presents a leaderboard, OOD or subsets view (issue 17)."""
    g = p_table.add_argument_group("presentation", "columns, names and intervals; LaTeX bolds "
                                   "the best method per metric column and sets baselines and "
                                   "the supervised upper bound apart by rules")
    g.add_argument("--columns", default=None, metavar="NAMES",
                   help="only these columns, in this order (comma list of headers as shown; "
                        "'delta X' for 'Δ X')")
    g.add_argument("--label", action="append", default=[], metavar="SPEC=NAME",
                   help="display NAME for a method spec or column header (repeatable), e.g. "
                        "'effnet+crf=EffNet + CRF'; LaTeX writes NAME verbatim")
    g.add_argument("--ci", default="column", choices=("column", "inline", "pm", "none"),
                   help="95%% intervals: a [lo, hi] column (default), inline after the number "
                        "(LaTeX: {\\scriptsize [lo, hi]}), a ± half-width column, or none")
    g.add_argument("--decimals", type=int, default=2, metavar="N",
                   help="decimals of percentages (default: 2)")
    g.add_argument("--siunitx", action="store_true",
                   help="LaTeX: siunitx S columns aligned on the decimal point instead of r")


def _cluster_arguments(p_run: argparse.ArgumentParser) -> None:
    """Options of the executors: local workers, SLURM through submitit, staging, DDP."""
    g = p_run.add_argument_group(
        "executors", "where cells run: here (one after another, or --jobs N worker processes) "
        "or as a SLURM job array (--executor slurm, returns after submitting; see "
        "docs/snellius.md and 'bench status')")
    g.add_argument("--executor", default="local", choices=("local", "slurm"),
                   help="local: in this machine's processes; slurm: one job array through "
                        "submitit (default: local)")
    g.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="local: run cells in N worker processes; shared stages are computed "
                        "once (default: 1)")
    g.add_argument("--max-parallel", type=int, default=0, metavar="N",
                   help="slurm: at most N array tasks at a time (default: all)")
    g.add_argument("--cluster", default="snellius", metavar="NAME|PATH",
                   help="slurm: shipped cluster profile (snellius) or a TOML file of the same "
                        "schema (default: snellius)")
    g.add_argument("--gpu-profile", default="", metavar="NAME",
                   help="slurm: profile of cells that run networks (default: the cluster's, "
                        "gpu_a100 on snellius; also gpu_h100)")
    g.add_argument("--cpu-profile", default=None, metavar="NAME",
                   help="slurm: profile of cells that need no GPU (default: the cluster's, "
                        "genoa on snellius; 'none': with the GPU cells)")
    for flag, kind, what in (("--partition", str, "partition"),
                             ("--gpus-per-node", int, "GPUs per task"),
                             ("--cpus-per-task", int, "CPU cores per task"),
                             ("--mem", str, "memory per task, e.g. 120G"),
                             ("--time", str, "time limit per task, HH:MM:SS"),
                             ("--account", str, "account (budget) to charge")):
        g.add_argument(flag, type=kind, default=None, help=f"slurm: {what} (overrides the "
                                                           "profile)")
    g.add_argument("--setup", action="append", default=None, metavar="LINE",
                   help="slurm: a line the batch script runs before the task (after the "
                        "profile's; repeatable)")
    g.add_argument("--stage-data", action="store_true",
                   help="copy (or extract, for an archive root) each data root to $TMPDIR "
                        "first: under slurm at the start of each job")
    g.add_argument("--gpus", type=int, default=1, metavar="N",
                   help="train classifier and segmenter stages with DDP over N processes (one "
                        "per GPU; NCCL on CUDA, gloo on CPU); slurm asks for N GPUs per task "
                        "(default: 1)")


def cmd_list(args: argparse.Namespace) -> int:
    import fnmatch

    from bench.data import DATASETS
    from bench.plugins import METHODS
    from bench.registry import _is_pattern

    if not _is_pattern(args.pattern) and args.pattern in METHODS:
        return cmd_show(argparse.Namespace(names=[args.pattern]))
    print("methods:")
    for e in METHODS.entries():
        if fnmatch.fnmatch(e.name, args.pattern):
            print(f"  {e.name:<24} {e.meta.get('kind', '?'):<9} {e.summary}")
    print("\ndatasets:")
    for e in DATASETS.entries():
        if fnmatch.fnmatch(e.name, args.pattern):
            print(f"  {e.name:<24} {e.summary}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from bench.data import DATASETS
    from bench.describe import describe, render
    from bench.plugins import METHODS

    blocks = []
    for name in args.names:
        if name in METHODS or name not in DATASETS:
            blocks.append(render(describe(name)))  # unknown: "did you mean" over methods
        else:
            blocks.append(_dataset_details(DATASETS.get(name)))
    print("\n".join(blocks), end="")
    return 0


def _dataset_details(config: object) -> str:
    rows = [("loader", "loader"), ("file", "path"), ("root", "root"),
            ("root variable", "root_env"), ("splits", "splits"), ("tiles", "tiles"),
            ("masks", "masks"), ("exclude", "exclude")]
    lines = [f"{getattr(config, 'name', '?')}: data set"]
    description = str(getattr(config, "description", "") or "")
    if description:
        lines += ["", *(f"  {line}" for line in description.strip().splitlines()), ""]
    for label, attr in rows:
        value = getattr(config, attr, None)
        if value not in (None, "", {}, []):
            lines.append(f"  {label + ':':<15} {value}")
    for split, rules in (getattr(config, "subsets", None) or {}).items():
        named = ", ".join(f"{r.name} ({r.describe()})" for r in rules)
        lines.append(f"  {'subsets:':<15} {split}: {named}")
    raw = getattr(config, "raw", None) or {}
    for label in ("citation", "license"):
        if raw.get(label):
            lines.append(f"  {label + ':':<15} {raw[label]}")
    return "\n".join(lines) + "\n"


def cmd_run(args: argparse.Namespace) -> int:
    from bench.data import DATASETS, resolve_root
    from bench.executors import run_cells
    from bench.plans import PlanStore, unchecked_spec
    from bench.plugins import builtin_dir, include_dirs
    from bench.runner import Cell, RunOptions
    from bench.spec import is_wildcard, split_top_level

    # plans (bench.plans) answer what the plugin classes would, so a cached rerun imports none
    plans = PlanStore(Path(args.out) / "cache", list(args.include))
    specs = plans.expand_methods(args.methods)
    named = {unchecked_spec(item).text for item in split_top_level(args.methods, ",")
             if item and not is_wildcard(item)}
    folders = (builtin_dir("methods"), *include_dirs(args.include))
    for spec in specs:  # a named pipeline that cannot run (no checkpoint) fails before any work
        if spec.text in named:
            _, infos, _ = plans.pipeline_infos(spec.text, args.profile, folders)
            blocked = [info.blocked() for info in infos if info.not_runnable is not None]
            if blocked:
                raise blocked[0]
    datasets = DATASETS.select(split_top_level(args.datasets, ","))
    if args.jobs < 1 or args.gpus < 1 or args.max_parallel < 0:
        raise ConfigError("--jobs and --gpus must be >= 1, --max-parallel >= 0")
    options = RunOptions(out=args.out, profile=args.profile, device=args.device, seed=args.seed,
                         data_roots=_data_roots(args.data_root), include=list(args.include),
                         limit=args.limit, progress=not args.no_progress, n_boot=args.n_boot,
                         gpus=args.gpus)
    train_on = DATASETS.get(args.train_on).name if args.train_on else ""
    roots = [*datasets, *([train_on] if train_on else [])]
    if args.stage_data:  # folders or archives; a local run stages them once, here
        from bench.staging import root_source, stage_options

        for ds in roots:
            root_source(ds, options.data_roots)
        if args.executor == "local":
            options = stage_options(options, roots)
    if args.executor == "local" or not args.stage_data:
        for ds in roots:  # fail before any work if a data root is missing
            resolve_root(DATASETS.get(ds), options.data_roots)
    cells = [Cell(spec.text, ds, args.split, options, train_on,
                  optional=spec.text not in named) for ds in datasets for spec in specs]
    header = (f"bench run: {len(specs)} method(s) x {len(datasets)} data set(s), split "
              f"{args.split}, profile {args.profile}")
    if args.executor == "slurm":
        return _submit_slurm(args, cells, [spec.text for spec in specs], header)
    print(header, file=sys.stderr)
    from bench.status import RunLog

    log = RunLog.create(args.out, cells, "local", workers=args.jobs)
    run_cells(cells, jobs=args.jobs, log=log)
    board = write_leaderboard(args.out)
    print(board)
    return 0


def _submit_slurm(args: argparse.Namespace, cells: list, specs: list[str], header: str) -> int:
    """``bench run --executor slurm``: check weights, skip done cells, submit, return."""
    try:
        from bench.slurm import load_cluster, submit_cells
    except ImportError as exc:
        raise ConfigError(f"--executor slurm needs submitit ({exc}): pip install "
                          "'smoke-wsss-bench[slurm]'") from None
    from bench.status import RunLog, cell_done
    from bench.weight_cache import fetch_command, missing_weights, weights_dir

    cluster = load_cluster(args.cluster)
    overrides = {"partition": args.partition, "gpus_per_node": args.gpus_per_node,
                 "cpus_per_task": args.cpus_per_task, "mem": args.mem, "time": args.time,
                 "account": args.account, "setup": args.setup}
    for name in {args.gpu_profile or cluster.gpu, *([args.cpu_profile] if args.cpu_profile
                                                   not in (None, "", "none") else [])}:
        cluster.resources(name, overrides)  # a bad profile or field fails before submitting
    missing = missing_weights(specs, args.profile)
    if missing:  # compute nodes are offline
        raise ConfigError(f"hub weights missing from the weights cache {weights_dir()}: "
                          f"{', '.join(map(str, missing))}; run "
                          f"\"{fetch_command(specs, args.profile)}\" on a login node first")
    print(header, file=sys.stderr)
    log = RunLog.create(args.out, cells, "slurm", cluster=str(cluster.path))
    memo: dict = {}
    todo = []
    for n, cell in enumerate(cells):
        if not args.stage_data and cell_done(cell, memo):
            log.write_cell(n, "done", summary="done in an earlier run")
        else:
            todo.append(n)
    if not todo:
        print(f"bench run: all {len(cells)} cells are done; nothing to submit "
              f"('bench table --out {args.out}')", file=sys.stderr)
        write_leaderboard(args.out)
        return 0
    submitted = submit_cells(cells, todo, log, cluster, overrides, gpu_profile=args.gpu_profile,
                             cpu_profile=args.cpu_profile, max_parallel=args.max_parallel,
                             stage_data=args.stage_data, gpus=args.gpus)
    folder = args.out / "slurm" / log.run_id
    done = len(cells) - len(todo)
    if done:
        print(f"bench run: {done} of {len(cells)} cells are done already", file=sys.stderr)
    for s in submitted:
        array = s.job_ids[0].split("_")[0]
        res = s.resources
        print(f"submitted job array {array}: {len(s.job_ids)} task(s) on {res.partition or '?'}"
              f" (profile {res.profile}, {res.gpus_per_node} GPU, {res.cpus_per_task} CPUs, "
              f"{res.time})")
    print(f"logs: {folder}")
    print(f"follow: bench status --out {args.out}; then: bench table --out {args.out}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from bench.status import RunLog, render

    log = RunLog.last(args.out)
    print(render(log.statuses(), log.run_id), end="")
    return 0


def cmd_fetch_weights(args: argparse.Namespace) -> int:
    from bench.spec import expand_methods
    from bench.weight_cache import fetch, pipeline_hub_weights, weights_dir

    needed = []
    for spec in expand_methods(args.methods):
        for weight in pipeline_hub_weights(spec, args.profile):
            if weight not in needed:
                needed.append(weight)
    root = weights_dir()
    if not needed:
        print(f"nothing to fetch: no stage of these pipelines reads hub weights under profile "
              f"{args.profile} (weights cache: {root})")
        return 0
    for weight in needed:
        path, digest, fetched = fetch(weight, root)
        size = path.stat().st_size / 2**20
        print(f"{'stored' if fetched else 'cached'} {weight}: {path} sha256 {digest} "
              f"({size:.1f} MiB)")
    return 0


def write_leaderboard(out: Path) -> str:
    """Rewrite ``<out>/leaderboard.md`` from every record in the run folder; return it."""
    from bench.atomic import atomic_path
    from bench.records import load_records
    from bench.table import frame, leaderboard_markdown

    text = leaderboard_markdown(frame(load_records(out)))
    path = out / "leaderboard.md"
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return text


def cmd_table(args: argparse.Namespace) -> int:
    import fnmatch

    from bench.atomic import atomic_path
    from bench.records import load_records
    from bench.table import (
        TableStyle,
        ablation,
        filter_weights,
        frame,
        image_leaderboard_view,
        leaderboard_view,
        ood_view,
        parse_columns,
        parse_labels,
        pivot,
        render_marked,
        subsets_view,
    )

    style = TableStyle(decimals=args.decimals, ci=args.ci, columns=parse_columns(args.columns),
                       labels=parse_labels(args.label), siunitx=args.siunitx)
    df = frame(load_records(args.out))
    if df.empty:
        raise ConfigError(f"no records under {args.out / 'records'}; run 'bench run' first")
    if args.split:
        df = df[df["split"] == args.split]
    if args.profile:
        df = df[df["profile"] == args.profile]
    scope = df  # where --ood finds the in-domain values of the rows selected below
    if args.datasets:
        pats = args.datasets.split(",")
        df = df[[any(fnmatch.fnmatch(d, p) for p in pats) for d in df["dataset"]]]
    if args.methods:
        pats = args.methods.split(",")
        df = df[[any(fnmatch.fnmatch(m, p) for p in pats) for m in df["pipeline"]]]
    if args.weights:
        df = filter_weights(df, args.weights)
    mark = args.format == "md"
    home = df[df["train_dataset"] == df["dataset"]] if not df.empty else df
    if args.ablation:
        from bench.plugins import METHODS

        labels = {e.name: e.meta.get("label") or e.name for e in METHODS.entries()}
        table = ablation(df, args.ablation, labels)
    elif args.grid:
        from bench.plugins import METHODS
        from bench.table import grid

        shown = [p for p in args.grid_params.split(",") if p]
        if not shown and args.grid in METHODS.names():
            shown = list(METHODS.get(args.grid).cls.grid_params)
        table = grid(df, args.grid, shown)
    elif args.subsets:
        table = subsets_view(df, args.subsets, args.metric, mark)
    elif args.ood or (home.empty and not df.empty):  # only OOD records selected: their view
        table = ood_view(df, args.metric, reference=scope, mark=mark)
    elif args.pivot:
        table = pivot(df, args.pivot, metric=args.metric or "mIoU")
    elif not df.empty and (df["level"] == "image").all():
        table = image_leaderboard_view(df, mark=mark)
    else:
        hidden = len(df) - len(home)
        if hidden:
            print(f"bench table: {hidden} out-of-distribution record(s) not shown; add --ood",
                  file=sys.stderr)
        table = leaderboard_view(home[home["level"] == "pixel"] if not home.empty else home,
                                 reference=args.reference, mark=mark)
    text = render_marked(table, args.format, style)
    if args.output:
        with atomic_path(args.output) as tmp:
            tmp.write_text(text, encoding="utf-8")
    else:
        print(text, end="")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from bench.metrics import paired_bootstrap
    from bench.records import load_areas, record_dir, slug

    folder = record_dir(args.out, args.profile, args.seed, args.dataset, args.split)
    loaded = []
    for method in (args.method_a, args.method_b):
        path = folder / f"{slug(method)}.json"
        if not path.exists():
            raise ConfigError(f"no record of '{method}' on {args.dataset}/{args.split} "
                              f"(profile {args.profile}, seed {args.seed}) in {folder}")
        reason = json.loads(path.read_text(encoding="utf-8")).get("not_run")
        if reason:
            raise ConfigError(f"'{method}' on {args.dataset}/{args.split} was {reason}")
        loaded.append(load_areas(path))
    (areas_a, ids_a, units), (areas_b, ids_b, _) = loaded
    if ids_a != ids_b:
        raise ConfigError("the two records were scored on different frames")
    res = paired_bootstrap(areas_a, areas_b, metric=args.metric, seed=args.seed, groups=units)
    print(f"{args.metric}: {args.method_a} - {args.method_b} = {100 * res['delta']:+.2f} "
          f"(95% CI [{100 * res['ci_low']:+.2f}, {100 * res['ci_high']:+.2f}], "
          f"p = {res['p_value']:.4f}, {len(ids_a)} frames)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bench.report import summary_line, write_report

    if args.shared_frames < 0:
        raise ConfigError("--shared-frames must be >= 0")
    path, stats = write_report(
        args.out, args.output, methods=[m for m in (args.methods or "").split(",") if m],
        datasets=[d for d in (args.datasets or "").split(",") if d],
        data_roots=_data_roots(args.data_root), regenerate=not args.no_regenerate,
        shared=args.shared_frames)
    print(summary_line(path, stats), file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from bench.export import export_maps

    written = export_maps(args.out, args.method, args.dataset, args.split, args.stage, args.to,
                          profile=args.profile, seed=args.seed,
                          data_roots=_data_roots(args.data_root))
    print(f"bench export: wrote {written.count} PNG(s) of '{written.method}' ({written.what}) on "
          f"{args.dataset}/{args.split} to {args.to}", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import importlib.util
    import subprocess

    if importlib.util.find_spec("streamlit") is None:
        raise ConfigError("bench demo needs Streamlit: pip install 'smoke-wsss-bench[demo]'")
    from bench import demo_app

    if not (args.out / "records").is_dir():
        raise ConfigError(f"no records under {args.out / 'records'}; run 'bench run --out "
                          f"{args.out}' first")
    env = {**os.environ, **demo_app.environment(args.out, _data_roots(args.data_root))}
    command = [sys.executable, "-m", "streamlit", "run", demo_app.__file__,
               "--server.port", str(args.port), "--server.headless", "true",
               "--browser.gatherUsageStats", "false"]
    print(f"bench demo: http://localhost:{args.port} (Ctrl+C stops it)", file=sys.stderr)
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:  # Streamlit stops on the same Ctrl+C
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bench`` console script; exits 2 on bad input with one line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    include = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--include"]
    try:
        parser = build_parser(include)
        args = parser.parse_args(argv)
        _registries(include)  # report a broken plugin or dataset file (--help tolerated it)
        command = {"list": cmd_list, "show": cmd_show, "run": cmd_run, "table": cmd_table,
                   "compare": cmd_compare, "status": cmd_status,
                   "fetch-weights": cmd_fetch_weights, "report": cmd_report,
                   "export": cmd_export, "demo": cmd_demo}[args.command]
        return command(args)
    except BenchError as exc:
        debug = "--debug" in argv or os.environ.get("BENCH_DEBUG", "") not in ("", "0")
        hint = "" if debug or exc.__cause__ is None else " (--debug shows the traceback)"
        print(f"bench: error: {exc}{hint}", file=sys.stderr)
        if debug:
            import traceback

            traceback.print_exception(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bench: interrupted; finished stages are cached, rerun to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
