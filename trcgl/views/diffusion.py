"""Chapter 2 (prompt-latent diffusion): the text condition, training, sampling, the synthetic
set and its filter, the oracle's consistency score and the ω sweep."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from .. import stages as S
from .common import interval_method_text


def no_context(cfg):
    """The comparison model: the same data, seed and schedule, without context vectors (m = 0)."""
    return cfg.replace({"diffusion.context_vectors": 0})


def sweep_requests(cfg) -> dict:
    """ω -> the sweep samples (the same prompts and starting noise at every ω)."""
    return {float(w): S.samples(cfg, "sweep", omega=w) for w in cfg.diffusion.guidance_sweep}


def needs(cfg) -> list:
    reqs = [S.train_set(cfg), S.selection_set(cfg), S.test_set(cfg), S.diffusion(cfg), S.diffusion(no_context(cfg)),
            S.samples(cfg), S.synthetic_set(cfg), S.samples(cfg, "unconditional"), *sweep_requests(cfg).values(),
            S.samples(cfg, "sweep"), S.samples(cfg, "sweep", model=S.diffusion(no_context(cfg)))]
    if cfg.data.source == "phantom":
        reqs += [S.oracle(cfg), *ladder_requests(cfg).values()]
    return reqs


def setting(ch):
    """(cohort, train, selection, test sets, target class indices) and the chapter's first line."""
    from ..diffusion.generate import target_classes

    cfg = ch.cfg
    cohort = ch.get(S.cohort(cfg))
    sets = {s: ch.get(S.image_set(cfg, s)) for s in ("train", "selection", "test")}
    targets = target_classes(cfg, cohort.groups)
    classes = list(cohort.class_set.classes)
    text = (f"profile {cfg.profile}: {len(sets['train'])} training / {len(sets['selection'])} selection / "
            f"{len(sets['test'])} test phantoms at {sets['train'].size}px, device {ch.device}; target classes "
            f"({', '.join(cfg.diffusion.target_groups)}): {', '.join(classes[c] for c in targets)}")
    return cohort, sets, targets, text


def prompt_walkthrough(ch, cohort, train_set, targets) -> str:
    """A few training prompts, their word pieces, and the shapes of E_n (Eq. 1) and E_cond (Eq. 2)."""
    from ..diffusion.training import build_conditioner, training_prompts

    cfg = ch.cfg
    prompts = training_prompts(train_set, cohort.class_set, cfg.seed)
    conditioner = build_conditioner(cfg, len(cohort.class_set.classes))
    tail_rows = [int(np.flatnonzero(train_set.Y[:, c])[0]) for c in targets[:3]]
    lines = []
    for i in [0, 1] + tail_rows:
        tokens = conditioner.tokenizer.tokenize(prompts[i])
        lines.append(f"{prompts[i]!r}\n   {len(tokens)} tokens: {' '.join(tokens)}")
    with torch.no_grad():
        E = conditioner.encode([prompts[0]])
        E_cond = conditioner.compose(E)
    frozen = not any(p.requires_grad for p in conditioner.encoder.parameters())
    lines.append(f"\nE_n (Eq. 1): {tuple(E.shape)}  ->  E_cond (Eq. 2): {tuple(E_cond.shape)}   "
                 f"(m = {conditioner.m} context vectors, L = {conditioner.max_length} tokens, d = {conditioner.dim}, "
                 f"encoder: {cfg.diffusion.text_encoder}, frozen: {frozen})")
    return "\n".join(lines)


def training_rows_text(ch, cohort, train_set, targets) -> str:
    """Which rows the generator learns from, how often a target class is seen per epoch, and the
    recipe's choices beyond the paper (each a ``diffusion`` option; the paper's reading in brackets)."""
    from ..diffusion.training import diffusion_rows, epoch_rows

    d = ch.cfg.diffusion
    idx = diffusion_rows(ch.cfg, train_set, ch.cfg.seed)
    reps = epoch_rows(ch.cfg, train_set.Y[idx], cohort.groups)
    Y = train_set.Y[idx]
    classes = cohort.class_set.classes
    per_epoch = int(reps.sum())
    lines = [f"the diffusion model learns from {len(idx)} of {len(train_set)} training images; target-class "
             f"positives among them (and their appearances per epoch): "
             + ", ".join(f"{classes[c]} {int(Y[:, c].sum())} ({int(reps[Y[:, c] == 1].sum())})" for c in targets),
             f"{per_epoch} images per epoch, {d.epochs} epochs, batch {d.batch_size}: "
             f"{d.epochs * -(-per_epoch // d.batch_size):,} steps at learning rate {d.lr:g}"]
    choices = [
        ("labels in the time embedding", "on" if d.label_condition else "off", "off",
         f"label_condition (per-label dropout {d.label_dropout:g})"),
        ("tail-balanced batches", f"repeat-factor t = {d.repeat_factor:g}" if d.repeat_factor else "off", "off",
         "repeat_factor"),
        ("prediction target", d.prediction_type, "epsilon", "prediction_type"),
        ("loss weights", f"min-SNR γ = {d.snr_gamma:g}" if d.snr_gamma else "equal", "equal", "snr_gamma"),
        ("noise schedule", d.beta_schedule, "scaled_linear", "beta_schedule"),
        ("a first phase on other patients", f"{d.pretrain_pool} rows of the disjoint pool, {d.pretrain_epochs} epochs"
         if d.pretrain_pool else "off", "a generator pretrained elsewhere (Stable Diffusion, RoentGen)", "pretrain_pool"),
    ]
    lines.append("the recipe (the paper's reading in brackets): "
                 + "; ".join(f"{what}: {now}" + ("" if now == paper else f" [{paper}]") + f" (diffusion.{key})"
                             for what, now, paper, key in choices))
    return "\n".join(lines)


def models(ch):
    """(the model, the m = 0 model) and a line naming the pipeline's components."""
    start = time.time()
    run, run_no_ctx = ch.get(S.diffusion(ch.cfg)), ch.get(S.diffusion(no_context(ch.cfg)))
    text = (f"trained or loaded in {time.time() - start:.0f}s; pipeline components: "
            + ", ".join(f"{k} ({type(v).__name__})" for k, v in run.pipeline.components.items()))
    return run, run_no_ctx, text


def reconstructions(ch, run, image_set, n: int = 8):
    """Test images beside their VAE reconstructions (figure) and the mean absolute error (text)."""
    from ..diffusion.training import encode_latents
    from ..plots import sample_grid

    vae = run.pipeline.vae
    with torch.no_grad():
        mu, _ = encode_latents(vae, image_set.images[:n], ch.device)
        recon = ((vae.decode(mu.to(ch.device) / vae.config.scaling_factor).sample.clamp(-1, 1) + 1) / 2)[:, 0]
    recon = recon.cpu().numpy()
    real = image_set.images[:n] / 255.0
    text = (f"latents: {tuple(mu.shape[1:])} per {image_set.size}px image; mean absolute reconstruction error "
            f"{np.abs(recon - real).mean():.4f} (pixel range 0-1)")
    return sample_grid([list(real), list(recon)], ["test image", "VAE reconstruction"]), text


def loss_curves(ch, run, run_no_ctx):
    """The denoising loss per epoch (training and held-out probe) of both models; None for a loaded pipeline."""
    from ..plots import loss_curves as draw

    if run.history is None:
        return None, f"pipeline loaded from {ch.cfg.paths.diffusion_pipeline}: no training curves"
    hist = {f"m = {ch.cfg.diffusion.context_vectors} context vectors": run.history, "m = 0 (prompts alone)": run_no_ctx.history}
    last = "; ".join(f"{k}: {h.heldout_loss.iloc[-1]:.4f}" for k, h in hist.items())
    text = f"final held-out loss: {last}"
    h = run.history
    if "context_shift" in h and ch.cfg.diffusion.context_vectors:
        text += (f"\nthe context vectors C: mean gradient norm per step {h.context_grad_norm.iloc[0]:.2e} in the first "
                 f"epoch, {h.context_grad_norm.iloc[-1]:.2e} in the last; after training they lie "
                 f"{h.context_shift.iloc[-1]:.1%} of their initial norm away from where they started")
        diff = h.heldout_loss.iloc[-1] - run_no_ctx.history.heldout_loss.iloc[-1]
        if not ch.cfg.diffusion.class_specific_context:
            text += (f". Held-out loss with minus without them: {diff:+.4f}. Shared context vectors are the same for "
                     "every image: whatever they learn, they carry nothing about the image, so they can act "
                     "only as a learned bias of the condition, which the UNet's own biases can absorb; class-specific "
                     "context vectors (diffusion.class_specific_context) are the variant that carries information")
    return draw(hist), text


def cfg_speed(ch, run, cohort, train_set, n: int = 16, repeats: int = 5) -> pd.DataFrame:
    """Guided denoising steps per second: batched (one pass over 2B) against two passes."""
    from ..diffusion.models import guided_noise, predict_noise
    from ..diffusion.pipeline import initial_noise
    from ..diffusion.training import training_prompts

    prompts = training_prompts(train_set, cohort.class_set, ch.cfg.seed)[:n]
    unet, maker = run.pipeline.unet, run.pipeline.conditioner().eval()
    timing = {}
    with torch.no_grad():
        c, u = maker(prompts), maker.unconditional(len(prompts))
        z = initial_noise(unet, 0, range(len(prompts))).to(ch.device)
        t = torch.tensor(500, device=ch.device)
        width = int(run.pipeline.context.config.get("num_labels", 0))
        y = torch.from_numpy(train_set.Y[:n].astype(np.float32)).to(ch.device) if width else None
        y0 = None if y is None else torch.zeros_like(y)
        for name in ("batched (one pass, 2B)", "two passes (B + B)"):
            start = time.perf_counter()
            for _ in range(repeats):
                if name.startswith("batched"):
                    guided_noise(unet, z, t, c, u, ch.cfg.diffusion.guidance_scale, y)
                else:
                    predict_noise(unet, z, t, u, y0), predict_noise(unet, z, t, c, y)
            timing[name] = repeats * len(prompts) / (time.perf_counter() - start)
    return pd.Series(timing, name=f"guided denoising steps per second ({n} images)").round(1).to_frame()


def figure_3(ch, cohort, train_set, targets):
    """Fig. 3: per target class, one real training image then synthetic ones; and a few prompts."""
    from ..plots import sample_grid

    s = ch.get(S.samples(ch.cfg))
    n_show = min(5, int(s.plan["target_id"].value_counts().min()))
    classes = cohort.class_set.classes
    grid, titles, shown = [], [], []
    for c in targets:
        real_i = np.flatnonzero(train_set.Y[:, c])[0]
        syn = np.flatnonzero(s.plan["target_id"].to_numpy() == c)[:n_show]
        grid.append([train_set.images[real_i] / 255.0] + [s.images[k] / 255.0 for k in syn])
        titles.append(f"{classes[c]}\n(real, then synthetic)")
        shown.extend(s.plan["prompt"].iloc[syn[:2]])
    fig = sample_grid(grid, titles, ["real"] + [f"synthetic {k + 1}" for k in range(n_show)])
    return fig, "some of the prompts:\n" + "\n".join(f"  {p}" for p in shown)


def synthetic(ch):
    """The filtered set, a sentence on it, and the per-class report."""
    res = ch.get(S.synthetic_set(ch.cfg))
    from .common import budget_rule_text

    text = (f"asked for {budget_rule_text(ch.cfg)} ({len(res.plan)} images); kept {len(res.kept)} of them "
            f"({len(res.kept) / len(res.plan):.0%}), each with loss weight {ch.cfg.diffusion.synthetic_weight}; "
            "thresholds calibrated on the selection split")
    r = res.report
    per_class = "; ".join(f"{c} {k:.0%} of samples, {q:.0%} of {n} real" for c, k, q, n in
                          zip(r.index, r["kept_fraction"], r["real_kept_fraction"], r["real_positives"]))
    text += (f"\nthe same cut-off on real selection images that have the class (the filter's recall at it): {per_class}. "
             "Where few real images pass, the filter cannot recognise the class, and rejecting a sample says "
             "little about the sample (the oracle below judges them)")
    return res, text, r.round(3)


def judge(ch, cohort, sets, targets):
    """The judge of the consistency score: the oracle on phantoms (the filter on real images); its
    scores on real test images (per target class AP and AUC) and sentences saying how far to trust it."""
    from ..diffusion.oracle import oracle_view
    from ..metrics import evaluate

    cfg, classes = ch.cfg, list(cohort.class_set.classes)
    if cfg.data.source == "phantom":
        oracle = ch.get(S.oracle(cfg))
        oracle_set = ch.get(S.image_set(cfg, "oracle"))
        text = (f"oracle: trained on {len(oracle_set)} fresh phantoms (≥ "
                f"{min(int(oracle_set.Y[:, c].sum()) for c in targets)} per target class)")
    else:
        oracle = ch.get(S.filter_classifier(cfg))
        text = ("real images: no renderer ground truth, so the judge below is the filter classifier itself "
                "(trained on the same real images: a weaker, biased judge)")
    test = sets["test"]
    P, F = oracle_view(oracle, test.images, classes, ch.device)
    ev = evaluate(test.Y, P, classes, cohort.groups)
    text += f"\nthe judge on real test images: mAP {ev.means['mAP']:.3f}, tail mAP {ev.means['mAP tail']:.3f}"
    return oracle, P, ev.per_class.loc[[classes[c] for c in targets], ["AP", "AUC"]], text


def consistency(ch, cohort, oracle, P_real, test_set, targets):
    """The pathology-consistency table (oracle p of the prompted class: synthetic vs unconditional
    vs real with / without the class, with a bootstrap interval of synthetic − unconditional)."""
    from ..diffusion.oracle import consistency_table, oracle_view

    classes = list(cohort.class_set.classes)
    s = ch.get(S.samples(ch.cfg))
    unc = ch.get(S.samples(ch.cfg, "unconditional"))
    P_syn, _ = oracle_view(oracle, s.images, classes, ch.device)
    P_unc, _ = oracle_view(oracle, unc.images, classes, ch.device)
    table = consistency_table(classes, targets, P_syn, s.plan["target_id"], P_unc, P_real, test_set.Y,
                              n_boot=ch.cfg.eval.bootstrap, seed=ch.cfg.seed)
    return table, P_unc


def consistency_verdict(ch, consistency_table, judge_scores) -> str:
    """What the consistency table says, and how far to trust the judge."""
    t, n = consistency_table, len(consistency_table)
    above = int(t["above baseline"].sum())
    lines = [f"At ω = {ch.cfg.diffusion.guidance_scale}, synthetic images of {above} of {n} target classes score above "
             f"the unconditional baseline on the oracle (95% bootstrap interval of the difference above 0): "
             f"{'at least half' if above >= n / 2 else 'fewer than half'} of them. Mean oracle probability of the "
             f"prompted class: synthetic {t['synthetic'].mean():.3f}, unconditional {t['unconditional'].mean():.3f}, "
             f"real images with the class {t['real with class'].mean():.3f}, real images without it "
             f"{t['real without class'].mean():.3f}."]
    auc = judge_scores["AUC"]
    strength = "well" if auc.mean() >= 0.8 else ("moderately" if auc.mean() >= 0.65 else "barely")
    lines.append(f"How far to trust this: the judge separates real positives of these classes from real negatives "
                 f"{strength} (mean AUC {auc.mean():.3f}, from {auc.min():.3f} to {auc.max():.3f}; 0.5 is chance).")
    if t["synthetic"].mean() < t["real without class"].mean():
        lines.append("The synthetic images score below even the real images WITHOUT the class: they lie outside the "
                     "image distribution the judge learnt (the Fréchet distances below say how far), so at this scale "
                     "the verdict is about their realism as much as about the prompted pathology.")
    gap = t["real with class"] - t["synthetic"]
    lines.append(f"The synthetic images reach the real images' score for {(gap <= 0).sum()} of {n} classes; the "
                 f"largest shortfall is {gap.idxmax()} ({gap.max():+.3f}).")
    return "\n".join(lines)


def guidance_sweep(ch, oracle, sets, targets):
    """The ω sweep: table (fidelity, Fréchet distance, diversity, with real references), its figure
    and a sentence."""
    from ..diffusion.oracle import guidance_sweep_table
    from ..plots import guidance_sweep as draw

    samples = {w: ch.get(r) for w, r in sweep_requests(ch.cfg).items()}
    plan = next(iter(samples.values())).plan
    table = guidance_sweep_table(oracle, {w: s.images for w, s in samples.items()}, plan, sets["train"], sets["test"],
                                 targets, ch.device)
    best = table["oracle p(target)"].idxmax()
    text = (f"The oracle's score of the prompted class is highest at ω = {best} "
            f"({table.loc[best, 'oracle p(target)']:.3f}; ω = {table.index[0]}: {table['oracle p(target)'].iloc[0]:.3f}); "
            f"diversity goes from {table['diversity'].iloc[0]:.2f} at ω = {table.index[0]} to "
            f"{table['diversity'].iloc[-1]:.2f} at ω = {table.index[-1]} (real: {table['diversity (real)'].iloc[0]:.2f}); "
            f"the Fréchet distance to real images is smallest at ω = {table['Fréchet distance'].idxmin()}.")
    return table, draw(table), text


def sweep_grid(ch, table, targets):
    """One target class's sweep samples, a row per prompt, a column per ω."""
    from ..plots import sample_grid

    samples = {w: ch.get(r) for w, r in sweep_requests(ch.cfg).items()}
    plan = next(iter(samples.values())).plan
    rows_c = np.flatnonzero(plan["target_id"].to_numpy() == targets[0])[:4]
    return sample_grid([[samples[w].images[k] / 255.0 for w in table.index] for k in rows_c],
                       [plan["prompt"].iloc[k] for k in rows_c], [f"ω = {w:g}" for w in table.index])


def context_comparison(ch, cohort, oracle, P_unc, P_real, test_set, targets):
    """The ablation of the context vectors on the ladder: rungs (c) and (c′) of the profile's m
    against m = 0, on the same prompts and starting noise (the sweep's prompts at the profile's ω)."""
    from ..diffusion.ladder import ladder_table
    from ..diffusion.oracle import oracle_view
    from .common import with_intervals

    cfg, classes = ch.cfg, list(cohort.class_set.classes)
    models = {f"m = {cfg.diffusion.context_vectors}": ch.get(S.samples(cfg, "sweep")),
              "m = 0": ch.get(S.samples(cfg, "sweep", model=S.diffusion(no_context(cfg))))}
    clusters = test_set.rows["ImageID"].to_numpy()
    parts = {}
    for name, s in models.items():
        P, _ = oracle_view(oracle, s.images, classes, ch.device)
        t = ladder_table(classes, targets, test_set.Y, clusters, P_real, None, P, s.plan["target_id"], P_unc,
                         n_boot=cfg.eval.bootstrap, seed=cfg.seed, method=cfg.eval.interval)
        parts[name] = t
    compare = pd.concat({k: with_intervals(v, ["c", "c'"]) for k, v in parts.items()}, axis=1)
    means = {k: v["c"].mean() for k, v in parts.items()}
    (a, ma), (b, mb) = means.items()
    n = len(next(iter(models.values())).plan)
    text = (f"rung (c), prompted samples vs real negatives, mean over the target classes: {a} {ma:.3f}, {b} {mb:.3f} "
            f"({n} images per model, {n // max(len(targets), 1)} per class, one generator seed; the intervals are "
            "per class)")
    return compare, text


def ladder_requests(cfg) -> dict:
    """The CAS classifiers of rung (d): the GAP-only classifier trained on the generator's images
    alone (the whole budget, unfiltered) and on the ideal generator's renders of the same label
    sets; their probabilities on the test split."""
    from ..tables import gap_only

    base = gap_only(cfg)
    return {"d": S.predictions(S.classifier(base, train=S.control_set(cfg, "unfiltered")), S.test_set(cfg)),
            "d*": S.predictions(S.classifier(base, train=S.ideal_set(cfg, 1.0)), S.test_set(cfg))}


def reconstruct(vae, images: np.ndarray, device, batch_size: int = 256) -> np.ndarray:
    """uint8 VAE reconstructions (posterior mean, decoded) of uint8 images: rung (b)."""
    from ..diffusion.training import encode_latents

    out = []
    with torch.no_grad():
        for lo in range(0, len(images), batch_size):
            mu, _ = encode_latents(vae, images[lo:lo + batch_size], device)
            x = vae.decode(mu.to(device) / vae.config.scaling_factor).sample.float().clamp(-1, 1)
            out.append(np.round((x[:, 0].cpu().numpy() + 1) / 2 * 255).astype(np.uint8))
    return np.concatenate(out)


def ladder(ch, cohort, run, oracle, P_real, sets, targets):
    """The generator's diagnostic ladder (:mod:`trcgl.diffusion.ladder`): rungs (a) to (d*) per
    target class with intervals, the rung where each class is lost, rung (e) (PRDC), and a verdict."""
    from ..diffusion.ladder import RUNGS, ladder_table, lost_at, lost_rule, meets_bar, prdc_table
    from ..diffusion.oracle import oracle_view
    from .common import with_intervals

    cfg, classes, test = ch.cfg, list(cohort.class_set.classes), sets["test"]
    s = ch.get(S.samples(cfg))
    unc = ch.get(S.samples(cfg, "unconditional"))
    P_recon, _ = oracle_view(oracle, reconstruct(run.pipeline.vae, test.images, ch.device), classes, ch.device)
    P_syn, F_syn = oracle_view(oracle, s.images, classes, ch.device)
    P_unc, _ = oracle_view(oracle, unc.images, classes, ch.device)
    cas = {k: ch.get(r) for k, r in ladder_requests(cfg).items()} if cfg.data.source == "phantom" else {}
    clusters = test.rows["ImageID"].to_numpy()
    table = ladder_table(classes, targets, test.Y, clusters, P_real, P_recon, P_syn, s.plan["target_id"], P_unc,
                         cas.get("d"), cas.get("d*"), n_boot=cfg.eval.bootstrap, seed=cfg.seed, method=cfg.eval.interval)
    lost = lost_at(table)
    _, F_test = oracle_view(oracle, test.images, classes, ch.device)
    sel = sets["selection"]
    _, F_sel = oracle_view(oracle, sel.images, classes, ch.device)
    e = prdc_table(classes, targets, {c: F_test[test.Y[:, c] == 1] for c in targets}, F_syn, s.plan["target_id"],
                   {c: F_sel[sel.Y[:, c] == 1] for c in targets}, seed=cfg.seed)
    good = meets_bar(table)
    shown = with_intervals(table, [k for k in RUNGS if k in table.columns])
    shown.insert(0, "samples", table["samples"])
    shown["lost at"] = lost
    shown.columns = [f"({k}) {RUNGS[k]}" if k in RUNGS else k for k in shown.columns]
    e_shown = with_intervals(e, ["precision", "recall", "density", "coverage"], 2)
    e_shown.insert(0, "n", e["n"])
    lines = [f"Rungs, per target class (oracle ROC AUC of the class; 0.5 is chance; {interval_method_text(cfg)} "
             f"of test label rows and of samples): " + "; ".join(f"({k}) {v}" for k, v in RUNGS.items()) + ". The rule: "
             f"{lost_rule()}."]
    rungs = [k for k in RUNGS if k in table.columns]
    for c in table.index:
        r = table.loc[c]
        auc = lambda k, r=r: f"{r[k]:.3f} [{r[k + ' low']:.3f}, {r[k + ' high']:.3f}]"   # noqa: E731
        lines.append(f"  {c}: " + ", ".join(f"({k}) {auc(k)}" for k in rungs if np.isfinite(r[k])) + ": "
                     + ("kept at every rung" if lost[c] == "kept" else "lost at " + lost[c]))
    lines.append(f"Prompted samples reach an oracle AUC ≥ 0.8 against real negatives and lie above unconditional "
                 f"samples (interval above 0.5) for {len(good)} of {len(table)} target classes"
                 + (f" ({', '.join(good)})." if good else "."))
    return shown, lost, e_shown, "\n".join(lines)


#: The generator variants of issue 21's comparison (``tools/compare_generators.py``): config
#: overrides of the profile's recipe, each measured on the ladder's rungs (c) and (c'). The
#: objective and schedule are taken back to the paper's reading one at a time, then together.
GENERATOR_VARIANTS = {
    "profile": {},
    "ε-prediction": {"diffusion.prediction_type": "epsilon"},
    "equal loss weights": {"diffusion.snr_gamma": None},
    "scaled-linear schedule": {"diffusion.beta_schedule": "scaled_linear"},
    "the paper's objective and schedule": {"diffusion.prediction_type": "epsilon", "diffusion.snr_gamma": None,
                                           "diffusion.beta_schedule": "scaled_linear"},
    "no EMA": {"diffusion.ema_decay": 0.0},
    # first 6 epochs on 2,000 rows of the disjoint pool (rarest first), as RoentGen learnt from other patients
    "pretrained on the pool": {"diffusion.pretrain_pool": 2000, "diffusion.pretrain_epochs": 6},
}


def recipe_rungs(cfg, cache=None, device="cpu") -> tuple[pd.DataFrame, list[str]]:
    """A generator recipe on the ladder's rungs (c) and (c'): the budget's samples of the model
    ``cfg`` trains (a cached stage) against real test negatives and against its unconditional
    samples, per target class with intervals; and the classes that meet chapter 2's bar (c ≥ 0.8,
    the (c') interval above 0.5)."""
    from ..diffusion.generate import target_classes
    from ..diffusion.ladder import ladder_table, meets_bar
    from ..diffusion.oracle import oracle_view

    cohort = S.get(S.cohort(cfg), cache)
    classes, targets = list(cohort.class_set.classes), target_classes(cfg, cohort.groups)
    test, oracle = S.get(S.image_set(cfg, "test"), cache), S.get(S.oracle(cfg), cache)
    s, unc = S.get(S.samples(cfg), cache), S.get(S.samples(cfg, "unconditional"), cache)
    P_real, _ = oracle_view(oracle, test.images, classes, device)
    P_syn, _ = oracle_view(oracle, s.images, classes, device)
    P_unc, _ = oracle_view(oracle, unc.images, classes, device)
    t = ladder_table(classes, targets, test.Y, test.rows["ImageID"].to_numpy(), P_real, None, P_syn,
                     s.plan["target_id"], P_unc, n_boot=cfg.eval.bootstrap, seed=cfg.seed, method=cfg.eval.interval)
    return t[[k for k in t.columns if k.split(" ")[0] in ("c", "c'")]], meets_bar(t)
