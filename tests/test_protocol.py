"""The benchmark's protocol, checked on the stage graph itself: every arm, generator, filter and
CAM classifier learns from the experiment's one training set, chooses on the selection split,
and every table scores the test split only."""
import pytest

from trcgl import load_config
from trcgl import stages as S
from trcgl.graph import Runner
from trcgl.tables import TABLES, table_rows


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    from trcgl.cache import ArtifactCache

    cfg = load_config("smoke", device="cpu")
    return cfg, Runner(ArtifactCache(tmp_path_factory.mktemp("runs")))


def _train_sets(runner, req):
    return [r for r in [req, *runner.upstream(req)] if r.stage == "image-set" and r.params.get("rows") == "train"]


def test_every_learner_sees_the_experiment_training_set_and_nothing_else(setting):
    cfg, runner = setting
    train = runner.identity(S.train_set(cfg))
    learners = {"VAE": S.vae(cfg), "diffusion UNet": S.diffusion(cfg), "filter": S.filter_classifier(cfg),
                "synthetic set": S.synthetic_set(cfg), "CAM classifier": S.cam_classifier(cfg),
                "inpainted set": S.inpainted_set(cfg), **{f"{k} control": S.control_set(cfg, k) for k in S.CONTROL_KINDS},
                **{f"ideal generator x{k:g}": S.ideal_set(cfg, k) for k in (0.5, 1.0)}}
    for name, req in learners.items():
        found = {runner.identity(r) for r in _train_sets(runner, req)}
        assert found == {train}, f"{name} learns from another training set"


@pytest.mark.parametrize("table", [t for t in TABLES if t not in ("gcn_conditions", "cca")])
def test_every_table_run_trains_on_the_train_split_chooses_on_selection_and_scores_test(setting, table):
    cfg, runner = setting
    train, select = runner.identity(S.train_set(cfg)), runner.identity(S.selection_set(cfg))
    req = S.table(cfg, table)
    assert req.params["test"].params["rows"] == "test"
    for row in table_rows(cfg, table):
        if row.unavailable:
            continue
        run = S.row_run(cfg, row, cfg.seeds[0])
        assert runner.identity(run.params["train"]) == train, row.name
        assert runner.identity(run.params["select"]) == select, row.name
        assert {runner.identity(r) for r in _train_sets(runner, run)} == {train}, row.name
    preds = [v for k, v in req.params.items() if k.startswith("run|")]
    assert preds and all(p.params["images"].params["rows"] == "test" for p in preds)


def test_the_dose_curve_shares_the_controls_baseline_and_positive_control(setting):
    """The dose curve's 1x row and the controls' ideal generator are one run (one cache entry), as
    are both tables' runs without extra images; other doses are runs of their own. Where the
    controls add stage 2 (``tables.stage2``), the dose curve's runs are the ones their stage 2
    continues; where both add it, the fine-tuned runs are shared."""
    from trcgl.tables import BASELINE, IDEAL_ROW, dose_row_name

    cfg, runner = setting
    for stage2 in ([], ["controls"]):
        c = cfg.replace({"tables.ideal_doses": [0.5, 1.0, 2.0], "tables.stage2": stage2, "tables.stage2_epochs": 1})
        runs = {r.name: S.row_run(c, r, 0) for r in table_rows(c, "controls")}
        assert all((req.stage == "finetune") == bool(stage2) for req in runs.values())
        controls = {name: runner.identity(req.params["start"] if stage2 else req) for name, req in runs.items()}
        dose = {r.name: runner.identity(S.row_run(c, r, 0)) for r in table_rows(c, "dose")}
        assert dose[dose_row_name(1.0)] == controls[IDEAL_ROW] and dose[BASELINE] == controls[BASELINE]
        assert len(set(dose.values())) == 4
    both = cfg.replace({"tables.ideal_doses": [0.5, 1.0], "tables.stage2": ["controls", "dose"], "tables.stage2_epochs": 1})
    runs = {r.name: runner.identity(S.row_run(both, r, 0)) for r in table_rows(both, "controls")}
    dose = {r.name: S.row_run(both, r, 0) for r in table_rows(both, "dose")}
    assert all(req.stage == "finetune" for req in dose.values())            # the dose curve fine-tunes too
    assert runner.identity(dose[dose_row_name(1.0)]) == runs[IDEAL_ROW] and runner.identity(dose[BASELINE]) == runs[BASELINE]


def test_condition_tables_train_on_their_own_rendering_of_the_same_rows(setting):
    """The label-graph and attention conditions re-render the same rows differently: the row
    selection keys are the experiment's, only how the pixels are drawn changes."""
    cfg, runner = setting
    for table in ("gcn_conditions", "cca"):
        for row in table_rows(cfg, table):
            if row.unavailable:
                continue
            t = S.train_set(row.cfg)
            assert t.params["rows"] == "train"
            for key in ("data.n_train", "data.min_train_positives", "data.split_seed", "data.projections"):
                assert row.cfg[key] == cfg[key]


def test_the_attention_ladders_run_on_the_finer_stage_and_on_the_tables_stage(setting):
    """The channel-class attention table: each condition's ladder on ``tables.cca_feature_stage``
    and again on the stage the other tables read (its GAP-only row the very run of Table 1's
    ConvNeXt row in the normal condition); one ladder per condition when the two stages agree."""
    from trcgl.tables import CCA, GAP_ONLY, TABLES_STAGE

    cfg, runner = setting
    cfg = cfg.replace({"model.feature_stage": 2, "tables.cca_feature_stage": 1})
    rows = {r.name: r for r in table_rows(cfg, "cca")}
    for condition in ("normal", "subtle tail"):
        for step in (GAP_ONLY, CCA):
            assert rows[f"{condition}: {step}"].cfg.model.feature_stage == 1
            assert rows[f"{condition}, {TABLES_STAGE}: {step}"].cfg.model.feature_stage == 2
    convnext = next(r for r in table_rows(cfg, "table1") if r.name == "ConvNeXt")
    assert (runner.identity(S.row_run(cfg, rows[f"normal, {TABLES_STAGE}: {GAP_ONLY}"], 0))
            == runner.identity(S.row_run(cfg, convnext, 0)))
    same = cfg.replace({"tables.cca_feature_stage": 2})
    assert len(table_rows(same, "cca")) == 6 and not any(TABLES_STAGE in r.name for r in table_rows(same, "cca"))
