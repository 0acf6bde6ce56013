"""Table runs as addressable units: `run TABLE --row R --seed S` computes that run and nothing
else, `--list` names every run (as commands or make targets), and the SLURM launcher submits
them as a job array (shown by --dry-run without submitit or a cluster; submitted through a
stand-in submitit here) and assembles the table afterwards."""
import os
import shlex
import shutil
import subprocess
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import pytest

from trcgl import cli, load_config
from trcgl.cache import ArtifactCache
from trcgl.sweeps import SlurmOptions, SweepError, parse_minutes, slurm_plan, submit_slurm, table_runs
from trcgl.tables import table_rows

# a tiny smoke configuration: a run trains in seconds
TINY = ["--profile", "smoke", "--device", "cpu"] + [a for kv in (
    "data.n_train=60", "data.n_selection=30", "data.n_test=30", "data.image_size=32", "phantom.render_size=32",
    "data.min_train_positives=1", "data.min_selection_positives=1", "data.min_test_positives=1")
    for a in ("--set", kv)]


def tiny_cfg():
    args = cli.build_parser().parse_args(["run", "table1", *TINY])
    from trcgl.config import parse_assignment

    return load_config("smoke", dict(parse_assignment(s) for s in args.set), device="cpu")


@pytest.fixture
def run_dir(tmp_path, session_cache, real_table, monkeypatch):
    """A fresh run folder holding only the session's parsed label table (parsed once per session)."""
    shutil.copytree(session_cache.root / "label-table", tmp_path / "cache" / "label-table")
    monkeypatch.setenv("TRCGL_RUN_DIR", str(tmp_path))
    return tmp_path


def main(argv, capsys):
    try:
        rc = cli.main(argv)
    except SystemExit as exit_:
        rc = exit_.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_list_names_every_run_of_the_table_as_a_command(run_dir, capsys):
    rc, out, err = main(["run", "table1", *TINY, "--list"], capsys)
    assert rc == 0, err
    lines = [line for line in out.splitlines() if line.startswith("python -m trcgl run")]
    runnable = [r.name for r in table_rows(tiny_cfg(), "table1") if not r.unavailable]
    assert len(lines) == len(runnable) * 1 == 9          # smoke: one seed; CLIP needs weights; ConvNeXt and TRCGL-Net cut and whole
    rows = []
    for line in lines:
        argv = shlex.split(line)
        assert argv[3:5] == ["run", "table1"] and "# cached" not in line
        rows.append(argv[argv.index("--row") + 1])
        assert argv[argv.index("--seed") + 1] == "0" and argv[5:5 + len(TINY)] == TINY
    assert rows == runnable


def test_the_make_fragment_has_one_target_per_run(run_dir, capsys, tmp_path):
    rc, out, err = main(["run", "table5", *TINY, "--list", "--format", "make"], capsys)
    assert rc == 0, err
    fragment = tmp_path / "sweep.mk"
    fragment.write_text(out)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}  # under `make test`
    dry = subprocess.run(["make", "-n", "--no-print-directory", "-f", str(fragment), "runs", "TRCGL=trcgl"],
                         capture_output=True, text=True, env=env)
    assert dry.returncode == 0, dry.stderr
    commands = [shlex.split(line) for line in dry.stdout.splitlines()]
    assert [c[c.index("--row") + 1] for c in commands] == ["α = 0.025", "α = 0.05", "α = 0.1"]
    assert all(c[:3] == ["trcgl", "run", "table5"] and "--seed" in c for c in commands)


def test_one_run_computes_only_its_classifier_and_predictions(run_dir, capsys):
    from trcgl.graph import runner

    r = runner(ArtifactCache())
    start = len(r.ledger)
    rc, out, err = main(["run", "table1", *TINY, "--row", "ConvNeXt + LDAM", "--seed", "0"], capsys)
    assert rc == 0, err
    resolved = r.ledger[start:]
    stages = [e.stage for e in resolved]
    assert stages.count("classifier") == 1 and stages.count("predictions") == 1
    assert "table" not in stages
    assert set(stages) <= {"label-table", "cohort", "image-set", "pretrain", "features", "classifier", "predictions"}
    assert all(e.computed for e in resolved if e.stage in ("classifier", "predictions"))
    assert "row 'ConvNeXt + LDAM' of table1, seed 0" in out
    # that run's classifier is the one the table asks for: it is now listed as cached, the others not
    rc, out, _ = main(["run", "table1", *TINY, "--list"], capsys)
    cached = [line for line in out.splitlines() if line.endswith("# cached")]
    assert len(cached) == 1 and "'ConvNeXt + LDAM'" in cached[0]
    # and the table's own request resolves that run from the cache
    cfg = tiny_cfg()
    run = next(t for t in table_runs(cfg, "table1") if t.row == "ConvNeXt + LDAM")
    from trcgl.graph import Runner

    assert [e.cached for e in Runner(ArtifactCache()).plan([run.request]) if e.stage == "classifier"] == [True]


@pytest.mark.parametrize("argv, expected", [
    (["--row", "Nope", "--seed", "0"], "target 'table1' has no row 'Nope'; its rows: ConvNeXt, ConvNeXt (whole network), ResNet"),
    (["--row", "CLIP", "--seed", "0"], "row 'CLIP' of table1 cannot run here: needs pretrained CLIP weights"),
    (["--row", "ResNet", "--seed", "7"], "row 'ResNet' of table1 has no seed 7; its seeds: 0"),
    (["--row", "ResNet"], "--row and --seed go together"),
    (["--list", "--row", "ResNet", "--seed", "0"], "choose one of --row/--seed, --list"),
    (["--dry-run"], "--dry-run goes with --executor slurm"),
    (["--executor", "slurm", "--time", "soon", "--dry-run"], "--time expects minutes"),
])
def test_bad_run_addresses_are_one_clear_line(run_dir, capsys, argv, expected):
    rc, out, err = main(["run", "table1", *TINY, *argv], capsys)
    assert rc == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and expected in err, err


def test_a_target_without_tables_has_no_runs(run_dir, capsys):
    rc, _, err = main(["run", "image-sets", *TINY, "--row", "ConvNeXt", "--seed", "0"], capsys)
    assert rc == 2 and "target 'image-sets' has no table runs" in err


def test_slurm_dry_run_prints_the_job_array_without_submitit(run_dir, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)            # not installed
    rc, out, err = main(["run", "table1", *TINY, "--executor", "slurm", "--dry-run", "--partition", "gpu",
                         "--time", "1:30:00"], capsys)
    assert rc == 0, err
    assert "SLURM job array for 'table1': 9 task(s)" in out and "partition gpu" in out and "time limit 90 min" in out
    tasks = [line for line in out.splitlines() if line.lstrip().startswith("task ")]
    assert len(tasks) == 9 and all("--row" in t and f"TRCGL_RUN_DIR={run_dir}" in t for t in tasks)
    assert "--inputs-only" in out and "dependency afterok" in out      # nothing cached yet: inputs first
    assert out.rstrip().endswith("dry run: nothing submitted")
    assert not (run_dir / "slurm").exists()


def test_slurm_without_submitit_is_one_line_naming_the_package(run_dir, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)
    rc, _, err = main(["run", "table1", *TINY, "--executor", "slurm"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "needs the optional package 'submitit'" in err and "uv sync --extra slurm" in err


def test_the_acceptance_command_runs_as_a_process(run_dir):
    """`python -m trcgl run table1 --executor slurm --dry-run`, as the issue names it (smoke profile)."""
    out = subprocess.run([sys.executable, "-m", "trcgl", "run", "table1", "--profile", "smoke", "--executor", "slurm",
                          "--dry-run"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "SLURM job array for 'table1': 9 task(s)" in out.stdout and "dry run: nothing submitted" in out.stdout


class FakeSubmitit:
    """A stand-in for submitit: records what is submitted; every job is done at once."""

    def __init__(self, failing=()):
        self.submitted, self.failing, self.batches, self.cancelled = [], set(failing), 0, []
        fake = self

        class Job:
            def __init__(self, k, fn):
                self.job_id, self.fn = (f"500_{k}" if fake.batches else "499"), fn
                self.paths = types.SimpleNamespace(stderr=Path(f"/logs/{self.job_id}.err"))

            def done(self):
                return True

            def result(self):
                cmd = self.fn.command
                name = cmd[cmd.index("--row") + 1] if "--row" in cmd else "inputs"
                if name in fake.failing:
                    raise RuntimeError("Job failed\nTraceback (most recent call last):\nValueError: boom")
                return "ok"

            def cancel(self, check=True):
                fake.cancelled.append(self.job_id)

        class SlurmExecutor:
            def __init__(self, folder):
                self.folder, self.params = folder, {}

            def update_parameters(self, **kw):
                self.params.update(kw)

            def submit(self, fn):
                fake.submitted.append((fn.command, dict(self.params), fake.batches))
                return Job(len(fake.submitted) - 1, fn)

            @contextmanager
            def batch(self):
                fake.batches += 1
                yield

        self.SlurmExecutor = SlurmExecutor
        self.helpers = types.SimpleNamespace(CommandFunction=lambda cmd, cwd=None: types.SimpleNamespace(command=cmd))


def test_submission_is_an_inputs_job_then_an_array_that_waits_for_it(run_dir):
    plan = slurm_plan(tiny_cfg(), "table1", TINY, SlurmOptions("gpu", 2, 8, 60, 4), run_dir)
    fake = FakeSubmitit()
    submit_slurm(plan, submitit=fake, poll_s=0, say=lambda s: None)
    (first, first_params, first_batch), *array = fake.submitted
    assert "--inputs-only" in first and first_batch == 0
    assert first_params == {"time": 60, "gpus_per_node": 2, "array_parallelism": 4, "job_name": "trcgl-table1",
                            "partition": "gpu", "cpus_per_task": 8}
    assert len(array) == 9 and all(b == 1 for _, _, b in array)          # one batch: one job array
    assert all(p["dependency"] == "afterok:499" and p["additional_parameters"] == {"kill-on-invalid-dep": "yes"}
               for _, p, _ in array)
    assert [c[c.index("--row") + 1] for c, _, _ in array] == [r.row for r in plan.runs]


def test_no_cluster_is_one_clear_error(run_dir):
    fake = FakeSubmitit()

    def no_srun(folder):
        raise RuntimeError('Could not detect "srun", are you indeed on a slurm cluster?')

    fake.SlurmExecutor = no_srun
    plan = slurm_plan(tiny_cfg(), "table1", TINY, SlurmOptions(), run_dir)
    with pytest.raises(SweepError, match="no SLURM cluster here .*login node"):
        submit_slurm(plan, submitit=fake, poll_s=0, say=lambda s: None)


def test_a_failed_inputs_job_cancels_the_array(run_dir):
    plan = slurm_plan(tiny_cfg(), "table1", TINY, SlurmOptions(), run_dir)
    fake = FakeSubmitit(failing={"inputs"})
    with pytest.raises(SweepError, match=r"the inputs job of 'table1' failed \(job 499: ValueError: boom; "
                                         r"log /logs/499.err\); the array was cancelled"):
        submit_slurm(plan, submitit=fake, poll_s=0, say=lambda s: None)
    assert len(fake.cancelled) == 9


def test_failed_tasks_are_named_with_their_logs(run_dir):
    plan = slurm_plan(tiny_cfg(), "table1", TINY, SlurmOptions(), run_dir)
    with pytest.raises(SweepError, match=r"1 of 9 table run\(s\) of 'table1' failed: ViT, seed 0 \(job 500_\d+: "
                                         r"ValueError: boom; log /logs/500_\d+.err\)"):
        submit_slurm(plan, submitit=FakeSubmitit(failing={"ViT"}), poll_s=0, say=lambda s: None)


def test_after_the_array_the_table_is_assembled_here(run_dir, capsys, monkeypatch):
    fake = FakeSubmitit()
    monkeypatch.setitem(sys.modules, "submitit", fake)
    assembled = []
    monkeypatch.setattr("trcgl.views.run", lambda cfg, target: assembled.append(target) or [])
    rc, out, err = main(["run", "table1", *TINY, "--executor", "slurm"], capsys)
    assert rc == 0, err
    assert assembled == ["table1"] and len(fake.submitted) == 10
    assert "assembled from 9 SLURM task(s)" in out


def test_time_limits_in_slurm_notation():
    assert parse_minutes("90") == 90 and parse_minutes("1:30:00") == 90 and parse_minutes("2-00:00") == 2880
    assert parse_minutes("0:10:30") == 11
    with pytest.raises(SweepError):
        parse_minutes("0")
