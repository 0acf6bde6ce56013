"""Table runs as addressable units, so that many processes or many machines share a table's work.

A table (:func:`trcgl.stages.table`) scores the test-split predictions of every (row, seed) of
its rows: one classifier each. Each of those is a **table run**, addressed on the command line
as ``TARGET --row NAME --seed S``, and resolving it computes that classifier and its test
predictions (and whatever they need that is not cached yet), nothing else::

    python -m trcgl run table1 --list                        # the target's runs, one command a line
    python -m trcgl run table1 --row ConvNeXt --seed 0       # one run
    python -m trcgl run table1                               # the table, from the cached runs

Runs share the cache (per-key locks, :mod:`trcgl.cache`), so they may run at the same time in
any number of processes on one machine (``make -j N sweep``: ``--list --format make`` writes one
make target per run) or on many machines that see the same run folder (a SLURM job array:
:func:`submit_slurm`, through the optional package ``submitit``). Whatever ran them, the table
stage then finds every run in the cache and only scores them into the results store.
"""
from __future__ import annotations

import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import TrcglError


class SweepError(TrcglError):
    """A run that is not in the target, a bad combination of options, or failed jobs."""


@dataclass(frozen=True)
class TableRun:
    """One (row, seed) of a table: its predictions request (which needs the run's classifier)."""

    table: str
    row: str
    seed: int
    request: object = field(compare=False, repr=False)

    def args(self) -> list[str]:
        return ["--row", self.row, "--seed", str(self.seed)]


def _table_requests(cfg, target: str) -> list:
    from .views import target_requests

    return [r for r in target_requests(cfg, target) if r.stage == "table"]


def table_runs(cfg, target: str) -> list[TableRun]:
    """Every run of the tables a target resolves (a table target, a chapter, or ``all``), in the
    tables' row and seed order; rows that cannot run here (e.g. CLIP without weights) have none."""
    runs = []
    for req in _table_requests(cfg, target):
        name = req.params["name"]
        for key, value in req.params.items():
            if key.startswith("run|"):
                _, row, seed = key.split("|", 2)
                runs.append(TableRun(name, row, int(seed), value))
    return runs


def find_run(cfg, target: str, row: str, seed: int) -> TableRun:
    """The run ``--row ROW --seed SEED`` of ``target``; a clear error naming what the target has."""
    tables = _table_requests(cfg, target)
    if not tables:
        raise SweepError(f"target '{target}' has no table runs: --row/--seed address the runs of a table "
                         f"(python -m trcgl run TABLE --list shows them)")
    runs = table_runs(cfg, target)
    rows = list(dict.fromkeys(r.row for r in runs))
    matches = [r for r in runs if r.row == row]
    if not matches:
        unavailable = [m for t in tables for m in t.params["rows"] if m["name"] == row and m["unavailable"]]
        if unavailable:
            raise SweepError(f"row '{row}' of {target} cannot run here: {unavailable[0]['unavailable']}")
        raise SweepError(f"target '{target}' has no row '{row}'; its rows: {', '.join(rows)}")
    hit = [r for r in matches if r.seed == seed]
    if not hit:
        raise SweepError(f"row '{row}' of {target} has no seed {seed}; its seeds: "
                         f"{', '.join(str(r.seed) for r in matches)} (config key 'seeds')")
    if len({r.table for r in hit}) > 1:
        raise SweepError(f"row '{row}' is in tables {', '.join(sorted({r.table for r in hit}))} of '{target}': "
                         f"name one of them as the target")
    return hit[0]


def input_requests(runs: list[TableRun]) -> list:
    """What the runs take as inputs, without the runs' own classifiers: the image sets, the
    synthetic and inpainted sets (and what those need, e.g. the filter classifier)."""
    from .graph import Request

    out = []
    for run in runs:
        out += [v for v in run.request.params.values() if isinstance(v, Request) and v.stage != "classifier"]
        model = run.request.params["model"]
        out += [v for v in model.params.values() if isinstance(v, Request)]
    return out


# ----------------------------------------------------------------------------- listing

def trcgl_command(target: str, base_args: list[str], extra: list[str] = ()) -> list[str]:
    """``python -m trcgl run TARGET ...`` with this interpreter."""
    return [sys.executable, "-m", "trcgl", "run", target, *base_args, *extra]


def _shell(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def list_runs(cfg, target: str, base_args: list[str], fmt: str = "commands", cache=None) -> str:
    """The runs of ``target`` as text: ``commands`` (one shell command a line, ``# cached`` where
    the run's predictions are in the cache) or ``make`` (a makefile fragment, one target per run,
    the goal ``runs`` making them all; ``make -j N -f FRAGMENT runs``)."""
    runs = table_runs(cfg, target)
    if not runs:
        raise SweepError(f"target '{target}' has no table runs to list")
    if fmt == "make":
        return _make_fragment(target, runs, base_args)
    if fmt != "commands":
        raise SweepError(f"unknown list format '{fmt}' (commands, make)")
    from .graph import Runner

    runner = Runner(cache)
    plan = {e.identity: e for e in runner.plan([r.request for r in runs])}
    lines = []
    for r in runs:
        cached = plan[runner.identity(r.request)].cached
        lines.append(_shell(["python", "-m", "trcgl", "run", target, *base_args, *r.args()])
                     + ("    # cached" if cached else ""))
    return "\n".join(lines)


def _make_fragment(target: str, runs: list[TableRun], base_args: list[str]) -> str:
    names = [f"{target}-run{k:03d}" for k in range(len(runs))]
    lines = [f"# Generated by `python -m trcgl run {target} --list --format make`: one target per table run.",
             "# make -j N -f THIS_FILE runs   (then `python -m trcgl run TARGET ...` assembles the table)",
             "TRCGL ?= python -m trcgl",
             f"RUNS := {' '.join(names)}",
             ".PHONY: runs $(RUNS)",
             "runs: $(RUNS)"]
    for name, r in zip(names, runs):
        argv = ["run", target, *base_args, *r.args()]
        lines.append(f"{name}:  # {r.table}: {r.row}, seed {r.seed}".replace("$", "$$"))
        lines.append("\t$(TRCGL) " + _shell(argv).replace("$", "$$"))
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- SLURM

SUBMITIT = "submitit"


@dataclass
class SlurmOptions:
    partition: str | None = None
    gpus_per_node: int = 1
    cpus_per_task: int | None = None
    time_min: int = 240
    array_parallelism: int = 64


def parse_minutes(text: str) -> int:
    """``--time``: minutes (``90``) or SLURM's ``[D-]HH:MM[:SS]``."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{2})(?::(\d{2}))?", text.strip())
    if text.strip().isdigit() and int(text) > 0:
        return int(text)
    if m:
        days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
        total = days * 1440 + hours * 60 + minutes + (1 if seconds else 0)
        if total > 0:
            return total
    raise SweepError(f"--time expects minutes (e.g. 90) or [D-]HH:MM[:SS]; got {text!r}")


@dataclass
class SlurmPlan:
    """What :func:`submit_slurm` submits: an optional inputs job, then the array, then the collection."""

    target: str
    folder: Path
    options: SlurmOptions
    runs: list[TableRun]
    tasks: list[list[str]]                  # one command per array task
    inputs_job: list[str] | None            # computes the runs' shared inputs first (None: all cached)
    missing_inputs: dict                    # stage -> how many inputs are not cached
    collect: list[str]                      # run in this process once every task finished

    def describe(self) -> str:
        o = self.options
        head = (f"SLURM job array for '{self.target}': {len(self.tasks)} task(s), one per (row, seed); "
                f"partition {o.partition or '(the cluster default)'}, {o.gpus_per_node} GPU(s) per node, "
                f"{o.cpus_per_task or 'default'} CPUs per task, time limit {o.time_min} min, at most "
                f"{o.array_parallelism} at once; logs in {self.folder}")
        lines = [head]
        if self.inputs_job:
            missing = ", ".join(f"{k} {v}" for k, v in sorted(self.missing_inputs.items()))
            lines.append(f"  first, one job computes the runs' shared inputs ({missing}); the array waits for it "
                         f"(dependency afterok):")
            lines.append(f"    {_shell(self.inputs_job)}")
        else:
            lines.append("  the runs' shared inputs are all cached: no inputs job")
        width = len(str(len(self.tasks) - 1))
        for k, (run, cmd) in enumerate(zip(self.runs, self.tasks)):
            lines.append(f"  task {k:>{width}} [{run.table}: {run.row}, seed {run.seed}]: {_shell(cmd)}")
        lines.append(f"  then, when every task has finished, here: {_shell(self.collect)}")
        lines.append("  (the table stage finds every run in the cache and writes the results store; the jobs "
                     "share the run folder, so it must be on a filesystem every node sees, with working file locks)")
        return "\n".join(lines)


def slurm_plan(cfg, target: str, base_args: list[str], options: SlurmOptions, run_dir: Path, cache=None) -> SlurmPlan:
    """The jobs that :func:`submit_slurm` would submit for ``target`` (nothing is submitted)."""
    from collections import Counter

    from .graph import Runner

    runs = table_runs(cfg, target)
    if not runs:
        raise SweepError(f"target '{target}' has no table runs to submit")
    env = ["env", f"TRCGL_RUN_DIR={Path(run_dir).resolve()}", "PYTHONHASHSEED=0"]
    missing = Counter(e.stage for e in Runner(cache).plan(input_requests(runs)) if not e.cached)
    inputs_job = [*env, *trcgl_command(target, base_args, ["--inputs-only"])] if missing else None
    tasks = [[*env, *trcgl_command(target, base_args, r.args())] for r in runs]
    return SlurmPlan(target, Path(run_dir).resolve() / "slurm", options, runs, tasks, inputs_job, dict(missing),
                     trcgl_command(target, base_args))


def _failure(job) -> str | None:
    """None when a finished job succeeded, else what went wrong and where its log is."""
    try:
        job.result()
    except Exception as err:        # submitit's FailedJobError / UncompletedJobError
        text = str(err).strip()
        last = text.splitlines()[-1] if text else type(err).__name__
        return f"job {job.job_id}: {last}; log {getattr(job.paths, 'stderr', '?')}"
    return None


def import_submitit():
    """The optional package, or one clear error saying how to install it."""
    try:
        import submitit
    except ImportError:
        raise SweepError(f"--executor slurm needs the optional package '{SUBMITIT}': install it with "
                         f"`uv sync --extra slurm` (or `pip install 'trcgl[slurm]'`); "
                         f"--dry-run shows the job array without it") from None
    return submitit


def submit_slurm(plan: SlurmPlan, submitit=None, poll_s: float = 30.0, say=print) -> list:
    """Submit ``plan`` (the inputs job, then the array depending on it), wait for every task, and
    return the finished jobs; a failed task is a :class:`SweepError` naming its run and log."""
    submitit = submitit or import_submitit()
    plan.folder.mkdir(parents=True, exist_ok=True)
    o = plan.options
    try:
        executor = submitit.SlurmExecutor(folder=plan.folder / "%j")
    except RuntimeError as err:          # submitit: no `srun` here
        raise SweepError(f"--executor slurm: no SLURM cluster here ({err}); run it on the cluster's login "
                         f"node (--dry-run shows the job array anywhere)") from None
    params = {"time": o.time_min, "gpus_per_node": o.gpus_per_node, "array_parallelism": o.array_parallelism,
              "job_name": f"trcgl-{plan.target}"}
    params.update({k: v for k, v in (("partition", o.partition), ("cpus_per_task", o.cpus_per_task)) if v})
    executor.update_parameters(**params)
    cwd = Path.cwd()
    first = None
    if plan.inputs_job:
        first = executor.submit(submitit.helpers.CommandFunction(plan.inputs_job, cwd=cwd))
        say(f"submitted the inputs job {first.job_id}")
        # the array starts when the inputs are there; SLURM cancels it if the inputs job fails
        executor.update_parameters(dependency=f"afterok:{first.job_id}",
                                   additional_parameters={"kill-on-invalid-dep": "yes"})
    with executor.batch():
        jobs = [executor.submit(submitit.helpers.CommandFunction(cmd, cwd=cwd)) for cmd in plan.tasks]
    say(f"submitted {len(jobs)} task(s) as job array {jobs[0].job_id.split('_')[0] if jobs else '-'}; "
        f"waiting for them (logs in {plan.folder})")
    pending = dict(enumerate(jobs))
    failed = []
    while pending:
        if first is not None and first.done():
            problem = _failure(first)
            if problem:
                for job in pending.values():
                    job.cancel(check=False)
                raise SweepError(f"the inputs job of '{plan.target}' failed ({problem}); the array was cancelled. "
                                 f"Fix and submit again: what it finished is cached")
            first = None
        for k, job in list(pending.items()):
            if job.done():
                del pending[k]
                problem = _failure(job)
                if problem:
                    run = plan.runs[k]
                    failed.append(f"{run.row}, seed {run.seed} ({problem})")
        if pending:
            time.sleep(poll_s)
    if failed:
        raise SweepError(f"{len(failed)} of {len(jobs)} table run(s) of '{plan.target}' failed: " + "; ".join(failed)
                         + ". Fix and submit again: finished runs are cached and not run twice")
    say(f"all {len(jobs)} task(s) finished")
    return jobs
