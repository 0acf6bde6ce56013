"""Command line: ``python -m trcgl --help``."""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

from . import __version__, book
from .cache import ArtifactCache, default_run_dir
from .config import (
    PROFILES,
    ConfigError,
    check_notebook_parameters,
    load_config,
    parse_assignment,
    parse_value,
)
from .errors import TrcglError

DEVICES = ("auto", "cpu", "cuda")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what, and where to read more), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _add_profile(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="cpu", choices=PROFILES, help="the scale to run at (default: cpu)")
    p.add_argument("--device", default=None, choices=DEVICES, help="default: the profile's (auto: a GPU when torch sees one)")
    p.add_argument("--preset", default=None, help="apply a preset on top of the profile, e.g. released "
                   "(the authors' released code; see book/paper_vs_code.md)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m trcgl",
        description="trcgl: the executable companion to TRCGL-Net (arXiv 2607.00975).",
    )
    parser.add_argument("--version", action="version", version=f"trcgl {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of its one-line message")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("config", help="print the resolved configuration of a profile")
    _add_profile(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a dotted key, e.g. --set data.image_size=128")

    p = sub.add_parser("info", help="print versions and the device a profile would use")
    _add_profile(p)

    p = sub.add_parser("check-data", help="read the label table and the images a profile uses; print the reports")
    _add_profile(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a dotted key, e.g. --set paths.padchest_csv=labels.csv")

    p = sub.add_parser("execute", help="run a chapter (.py) with papermill into its .ipynb")
    p.add_argument("notebook", type=Path, help="a jupytext source, e.g. notebooks/00_overview.py")
    _add_profile(p)
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                   metavar=("NAME", "VALUE"), help="a notebook parameter (value read as YAML)")
    p.add_argument("--output", type=Path, default=None, help="executed notebook (default: beside the source)")
    p.add_argument("--quiet", action="store_true", help="do not stream the chapter's output to the terminal")

    p = sub.add_parser("run", help="compute stages (and everything they need) outside the notebooks")
    p.add_argument("target", help="all, or a target: " + ", ".join(_targets()))
    _add_profile(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a dotted config key")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="a chapter parameter, as for execute (value read as YAML)")
    p.add_argument("--shuffle", type=int, default=None, metavar="SEED",
                   help="visit the target's stages in an order drawn with SEED: several processes started at once "
                        "on one cache (each its own SEED) then mostly compute different stages")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="compute with N processes on this machine, sharing the cache (default 1; make reproduce: 2 "
                        "on CPU): the book's many small stages use the cores better side by side")
    p.add_argument("--helper", action="store_true", help=argparse.SUPPRESS)   # one of --workers' processes
    p.add_argument("--reverse", action="store_true", help=argparse.SUPPRESS)  # its order: last to first
    g = p.add_argument_group("table runs (book/reproduce.md, 'Many machines')")
    g.add_argument("--row", default=None, help="compute one run of a table target: this row (with --seed)")
    g.add_argument("--seed", type=int, default=None, help="... and this seed")
    g.add_argument("--list", action="store_true", help="print the target's table runs, one command a line, and stop")
    g.add_argument("--format", choices=("commands", "make"), default="commands",
                   help="--list as shell commands (default) or as a makefile fragment, one target per run")
    g.add_argument("--inputs-only", action="store_true",
                   help="compute only what the target's table runs take as inputs (image, synthetic, inpainted sets)")
    g.add_argument("--executor", choices=("local", "slurm"), default="local",
                   help="slurm: submit every table run as a SLURM job array (needs submitit), then assemble here")
    g.add_argument("--dry-run", action="store_true", help="with --executor slurm: print the job array, submit nothing")
    g.add_argument("--partition", default=None, help="SLURM partition (default: the cluster's)")
    g.add_argument("--gpus-per-node", type=int, default=1, help="GPUs per SLURM task (default 1)")
    g.add_argument("--cpus-per-task", type=int, default=None, help="CPUs per SLURM task (default: the cluster's)")
    g.add_argument("--time", default="240", help="time limit per SLURM task: minutes or [D-]HH:MM[:SS] (default 240)")
    g.add_argument("--array-parallelism", type=int, default=64, help="at most this many tasks at once (default 64)")
    g = p.add_argument_group("estimate")
    g.add_argument("--estimate", action="store_true",
                   help="print the estimated time of each stage the run would compute, and stop")
    g.add_argument("--reference", default=None, metavar="DEVICE",
                   help="--estimate on a reference device of configs/devices.yaml (e.g. h100) instead of "
                        "measuring the networks on this machine")

    p = sub.add_parser("check-book", help="fail if a chapter's executed notebook is missing or stale")
    p.add_argument("--root", type=Path, default=Path("."))

    p = sub.add_parser("build-book", help="check freshness, then jupyter-book build")
    p.add_argument("--root", type=Path, default=Path("."))
    p.add_argument("--output", type=Path, default=None, help="the book goes to OUTPUT/_build/html (default: ROOT)")

    p = sub.add_parser("check-site", help="open every page of the built book in headless Chromium")
    p.add_argument("html", type=Path, nargs="?", default=Path("_build/html"))
    p.add_argument("--screenshots", type=Path, default=Path("_build/screenshots"))
    p.add_argument("--if-chromium", action="store_true", help="skip (exit 0) when Chromium is not installed")

    p = sub.add_parser("publish", help="push the built book to the gh-pages branch (ghp-import)")
    p.add_argument("--root", type=Path, default=Path("."))
    p.add_argument("--remote", default="origin", help="the git remote to push to (default: origin)")
    p.add_argument("--branch", default="gh-pages", help="the branch that serves the pages (default: gh-pages)")
    p.add_argument("--force", action="store_true", help="publish even a stale or smoke-profile book")
    p.add_argument("--no-push", action="store_true", help="commit to the branch, do not push")

    p = sub.add_parser("cache", help="list or clear cached artifacts")
    p.add_argument("action", choices=["list", "clear"])
    p.add_argument("--stage", default=None, help="only this stage")
    p.add_argument("--yes", action="store_true", help="clear without asking")
    return parser


def _targets() -> list[str]:
    from .stages import TARGETS
    from .views import CHAPTER_VIEWS

    return list(CHAPTER_VIEWS) + list(TARGETS)


def _run_stages(args) -> None:
    from . import workers
    workers.prepare(args.workers)    # before torch is imported

    from .runtime import torch_threads

    params = {name: parse_value(value, f"the value of parameter {name}") for name, value in args.parameter}
    check_notebook_parameters(params)
    overrides = dict(parse_assignment(s) for s in args.set)
    cfg = load_config(args.profile, overrides, preset=args.preset, device=args.device, **params)
    _check_run_options(args)
    with torch_threads(cfg.threads):
        return _run_configured(cfg, args)


def _run_configured(cfg, args) -> None:
    """``run`` with its configuration loaded and the profile's torch threads set."""
    import time
    from collections import Counter

    from . import workers
    from .runtime import processes
    from .views import run as run_target

    if args.estimate:
        return _estimate(cfg, args)
    if args.list or args.executor == "slurm":
        return _sweep(cfg, args)
    procs = processes()     # under accelerate launch / torchrun: join the group first (each process its GPU)
    if procs.size > 1 and procs.is_main:
        print(f"run {args.target}: {procs.size} processes on {procs.device.type} train together", flush=True)
    start = time.perf_counter()
    if args.row is not None or args.inputs_only:
        ledger = _table_part(cfg, args)
    elif args.helper:       # SIGTERM (from the main process, or when it died) stops it as Ctrl-C would
        with workers.stop_on_sigterm():
            parent = workers.watch_parent()
            print(f"helper {os.getpid()} of `run {args.target}` (stops with its main process {parent})", flush=True)
            run_target(cfg, args.target, shuffle=args.shuffle, cooperative=True, reverse=args.reverse)
        return
    elif args.workers > 1:
        print(f"run {args.target}: {args.workers} worker processes share the cache (helpers' output: "
              f"{default_run_dir() / 'logs'})", flush=True)
        # SIGTERM, as Ctrl-C, leaves through Helpers.__exit__, which stops the helpers
        with workers.stop_on_sigterm(), workers.Helpers(["run", args.target, *_base_args(args)], args.workers - 1,
                                                        default_run_dir() / "logs", args.target) as helpers:
            ledger = run_target(cfg, args.target, shuffle=args.shuffle, cooperative=True)
            failed = helpers.wait()
        if failed:
            from .graph import StageError

            raise StageError("; ".join(failed))
    else:
        ledger = run_target(cfg, args.target, shuffle=args.shuffle)
    if not procs.is_main:   # every process resolved the same stages; the main one reports them
        return
    if args.row is None and not args.inputs_only:
        book.record_stage_timing(default_run_dir(), cfg.profile, args.target, ledger,
                                 wall=time.perf_counter() - start, workers=args.workers)
    computed = [e for e in ledger if e.computed]
    for e in computed:
        print(f"computed {e.stage}/{e.key} in {e.seconds:.1f} s")
    counts = Counter(e.stage for e in ledger if not e.computed)
    print(f"run {args.target} ({cfg.profile}): {len(computed)} stage(s) computed, {sum(counts.values())} loaded "
          f"from the cache" + (f" ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})" if counts else ""))


def _check_run_options(args) -> None:
    """Refuse combinations of ``run`` options that mean nothing (one line each)."""
    from .sweeps import SweepError

    if (args.row is None) != (args.seed is None):
        raise SweepError("--row and --seed go together: name one run of the table (see --list)")
    modes = [name for name, on in (("--row/--seed", args.row is not None), ("--list", args.list),
                                   ("--inputs-only", args.inputs_only), ("--executor slurm", args.executor == "slurm"),
                                   ("--estimate", args.estimate)) if on]
    if len(modes) > 1:
        raise SweepError(f"choose one of {', '.join(modes)}")
    if args.dry_run and args.executor != "slurm":
        raise SweepError("--dry-run goes with --executor slurm (it prints the job array instead of submitting it)")
    if args.reference and not args.estimate:
        raise SweepError("--reference goes with --estimate")
    if args.workers < 1:
        raise SweepError(f"--workers must be at least 1, got {args.workers}")
    if args.workers > 1 and (modes or args.helper or args.shuffle is not None):
        raise SweepError("--workers computes a whole target: not with --row/--seed, --list, --inputs-only, "
                         "--executor slurm, --estimate or --shuffle")
    if args.workers > 1 and os.environ.get("WORLD_SIZE", "1") != "1":
        raise SweepError("--workers starts processes on its own: not under a launcher (accelerate launch, torchrun)")


def _base_args(args) -> list[str]:
    """The options that choose the configuration, as given (for the commands of the runs)."""
    out = ["--profile", args.profile]
    if args.device:
        out += ["--device", args.device]
    if args.preset:
        out += ["--preset", args.preset]
    for s in args.set:
        out += ["--set", s]
    for name, value in args.parameter:
        out += ["-p", name, value]
    return out


def _table_part(cfg, args) -> list:
    """``run TARGET --row R --seed S`` (that run's classifier and test predictions) or
    ``--inputs-only`` (what the target's runs take as inputs)."""
    from .graph import runner
    from .sweeps import find_run, input_requests, table_runs

    r = runner()
    start = len(r.ledger)
    if args.row is not None:
        run = find_run(cfg, args.target, args.row, args.seed)
        print(f"run {args.target}: row '{run.row}' of {run.table}, seed {run.seed}", flush=True)
        r.resolve(run.request)
    else:
        for req in input_requests(table_runs(cfg, args.target)):
            r.resolve(req)
    return r.ledger[start:]


def _sweep(cfg, args) -> None:
    from .sweeps import SlurmOptions, list_runs, parse_minutes, slurm_plan, submit_slurm

    if args.list:
        print(list_runs(cfg, args.target, _base_args(args), args.format))
        return
    options = SlurmOptions(args.partition, args.gpus_per_node, args.cpus_per_task, parse_minutes(args.time),
                           args.array_parallelism)
    plan = slurm_plan(cfg, args.target, _base_args(args), options, default_run_dir())
    print(plan.describe(), flush=True)
    if args.dry_run:
        print("dry run: nothing submitted")
        return
    submit_slurm(plan)
    from .views import run as run_target

    ledger = run_target(cfg, args.target)      # every run is cached now: this scores and publishes
    book.record_stage_timing(default_run_dir(), cfg.profile, args.target, ledger)
    print(f"run {args.target} ({cfg.profile}): assembled from {len(plan.tasks)} SLURM task(s); "
          f"{sum(e.computed for e in ledger)} stage(s) computed here")


def _estimate(cfg, args) -> None:
    from .estimate import Rates, estimate
    from .runtime import select_device
    from .views import target_requests

    rates = Rates(args.reference) if args.reference else Rates(device=select_device(cfg.device))
    print(f"estimating `run {args.target}` ({cfg.profile}) ...", flush=True)
    print(estimate(cfg, args.target, target_requests(cfg, args.target), rates).text())


def run(args: argparse.Namespace) -> int:
    if args.command == "config":
        overrides = dict(parse_assignment(s) for s in args.set)
        cfg = load_config(args.profile, overrides, preset=args.preset, device=args.device)
        print(cfg.to_yaml(), end="")
    elif args.command == "info":
        from .runtime import describe, select_device

        cfg = load_config(args.profile, preset=args.preset, device=args.device)
        print(json.dumps({"profile": cfg.profile, **describe(select_device(cfg.device))}, indent=1))
    elif args.command == "execute":
        if not args.notebook.is_file():
            raise ConfigError(f"no such notebook source: {args.notebook}")
        params = {"profile": args.profile, "device": args.device or "auto"}
        if args.preset:
            params["preset"] = args.preset
        params.update({name: parse_value(value, f"the value of parameter {name}") for name, value in args.parameter})
        check_notebook_parameters(params)  # validate before starting a kernel
        load_config(**params)
        print(f"executing {args.notebook} ({', '.join(f'{k}={v}' for k, v in params.items())})", flush=True)
        out = book.execute(args.notebook, params, root=Path.cwd(), output=args.output, echo=not args.quiet)
        print(f"executed {args.notebook} -> {out}")
    elif args.command == "run":
        _run_stages(args)
    elif args.command == "check-data":
        from .stages import check_data

        overrides = dict(parse_assignment(s) for s in args.set)
        print(check_data(load_config(args.profile, overrides, device=args.device)))
    elif args.command == "publish":
        from .publish import publish

        print(publish(args.root, remote=args.remote, branch=args.branch, force=args.force, push=not args.no_push))
    elif args.command == "check-book":
        n = len(book.check_fresh(args.root, default_run_dir()))
        print(f"{n} chapter notebooks are executed and up to date")
    elif args.command == "build-book":
        html = book.build(args.root, args.output)
        print(f"book built: {html / 'index.html'}")
    elif args.command == "check-site":
        from .site_check import SiteCheckError, check_site, find_chromium

        if args.if_chromium and find_chromium() is None:
            print("browser check skipped: Chromium is not installed (apt-get install chromium)")
            return 0
        try:
            reports = check_site(args.html, args.screenshots)
        except SiteCheckError as err:
            raise book.BookError(str(err)) from None
        bad = [r for r in reports if not r.ok]
        for r in bad:
            print(f"{r.page}: {r.problems()}", file=sys.stderr)
        print(f"browser check: {len(reports) - len(bad)} of {len(reports)} pages pass; screenshots in {args.screenshots}")
        return 1 if bad else 0
    elif args.command == "cache":
        cache = ArtifactCache()
        if args.action == "list":
            for row in cache.listing():
                print(f"{row['stage']:<24} {row['key']:<26} {row['bytes'] if row['bytes'] is not None else 'unfinished'}")
        else:
            what = f"the '{args.stage}' stage" if args.stage else "every stage"
            if not args.yes and not _confirm(f"remove the cached artifacts of {what} under {cache.root}? [y/N] "):
                raise CacheClearRefused(f"nothing removed: clearing the cache of {what} needs a yes "
                                        "(answer y, or pass --yes)")
            print(f"removed {cache.clear(args.stage)} cached artifacts")
    return 0


class CacheClearRefused(TrcglError):
    """``cache clear`` was not confirmed."""


def _confirm(question: str) -> bool:
    """Ask on the terminal; without one (CI, a pipe) the answer is no."""
    if not sys.stdin or not sys.stdin.isatty():
        return False
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:
        return False


def one_line(text: str) -> str:
    """A message's lines joined into one (a list after a colon stays readable: ``a: b; c``)."""
    out = ""
    for line in (part.strip() for part in text.splitlines()):
        if line:
            out += ("" if not out else " " if out.endswith((":", "(")) else "; ") + line
    return out


def guarded(call, debug: bool = False) -> int:
    """Run ``call()`` as the command line does: a :class:`TrcglError` (a bad input the user can
    fix) is one line on stderr and exit code 2; with ``debug`` it keeps its traceback."""
    try:
        return call()
    except TrcglError as err:
        if debug:
            raise
        print(f"trcgl: error: {one_line(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:    # Ctrl-C: 130; a SIGTERM turned into workers.Stopped: 143
        if debug:
            raise
        signum = getattr(err, "signum", signal.SIGINT)
        print("trcgl: interrupted" + (f" ({signal.Signals(signum).name})" if signum != signal.SIGINT else ""),
              file=sys.stderr)
        return 128 + signum


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return guarded(lambda: run(args), debug=args.debug)
