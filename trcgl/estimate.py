"""How long a run will take, stage by stage, printed before it starts: an estimate from a cost
model, never a measurement of the run itself (``python -m trcgl run TARGET --estimate``).

1. **The plan.** :meth:`trcgl.graph.Runner.plan` lists every stage request the target needs and
   whether it is cached; nothing is computed except the cohort (seconds), whose split sizes the
   counts below need.
2. **The work** of each request to compute, in image passes through one network:

   - ``image-set``: one render per row (phantoms; or one read per row, real images), spread
     over the rendering processes;
   - ``classifier``: (warm-up + fine-tuning epochs) x (train + extra images), the warm-up
     epochs counted as forward passes (the backbone is frozen), plus a forward pass of the
     selection images per epoch (the best epoch is chosen there); the extra synthetic or
     inpainted sets are counted at their largest (every sample kept);
   - ``finetune`` (stage 2 continuing a stage 1 run): fine-tuning epochs x (train + extra
     images) training passes and a forward pass of the selection images per epoch;
   - ``predictions``: a forward pass per image; ``synthetic-set``: the filter's forward passes
     over the samples and the selection images;
   - ``vae``, ``prompt-diffusion``, ``normal-dit``: rows x epochs training passes of the VAE,
     UNet or DiT, plus a VAE encoding of each row;
   - ``samples``: images x DDIM steps UNet passes (twice: classifier-free guidance), plus a
     decoding each; ``inpainted-set``: images x RePaint steps (with its jumps) DiT passes, a
     Grad-CAM pass of the CAM classifier and a VAE encoding and decoding each;
   - every other stage: only its fixed overhead (each computed stage has one: starting,
     loading inputs, checkpoints; larger for the training stages).
3. **The rate** of each network, either *measured* here (the default: a few timed training
   steps and forward passes on the device the run would use, and a few timed phantom renders on
   this CPU), or taken from a **reference device** (``--reference h100``,
   ``configs/devices.yaml``): the network's forward FLOPs per image, counted by torch on the
   CPU, over an effective FLOP rate for its kind of network, calibrated on published
   benchmarks (the file says which).

seconds = passes / rate (+ the fixed overhead per computed stage). The rates of small networks
depend on batch size, input pipeline and kernels; expect the truth within a factor of about two.
"""
from __future__ import annotations

import functools
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
import yaml

from .errors import TrcglError


class EstimateError(TrcglError):
    """An unknown reference device."""


@functools.lru_cache(maxsize=1)
def devices() -> dict:
    """``configs/devices.yaml``: the reference devices and the kinds of networks."""
    return yaml.safe_load(resources.files("trcgl").joinpath("configs", "devices.yaml").read_text())


def reference(name: str) -> dict:
    refs = {k: v for k, v in devices().items() if k != "kinds"}
    if name not in refs:
        raise EstimateError(f"unknown reference device '{name}' (known: {', '.join(refs)}; configs/devices.yaml)")
    return refs[name]


# ----------------------------------------------------------------------------- networks

@dataclass(frozen=True)
class Net:
    """A network to time or count: its kind name and what builds it (a hashable spec)."""

    name: str                   # e.g. "convnextv2_atto (trcgl)", "unet", "vae"
    family: str                 # classifier | vae | unet | dit
    spec: tuple                 # what :func:`build_net` needs (hashable)
    image_size: int             # the input's side in pixels (latents for unet and dit)
    channels: int = 1


def classifier_net(cfg) -> Net:
    m = cfg.model
    name = m.backbone if m.arch in ("trcgl", "csra", "timm") else m.arch
    keys = tuple(sorted((k, repr(v)) for k, v in cfg.leaves(("model",)).items()))
    return Net(f"{name} ({m.arch})", "classifier", keys + (("paths.clip_image_encoder", cfg.paths.clip_image_encoder),),
               cfg.data.image_size)


def latent_size(cfg) -> int:
    return cfg.data.image_size // 2 ** (len(cfg.diffusion.vae_channels) - 1)


def vae_net(cfg) -> Net:
    d = cfg.diffusion
    return Net("vae", "vae", (d.latent_channels, tuple(d.vae_channels)), cfg.data.image_size)


def unet_net(cfg) -> Net:
    d = cfg.diffusion
    dim = 384 if d.text_encoder == "minilm" else 768
    return Net("unet", "unet", (d.latent_channels, tuple(d.unet_channels), dim, d.attention_levels,
                                d.pooled_condition, d.max_length + d.context_vectors, 30 if d.label_condition else 0),
               latent_size(cfg), d.latent_channels)


def dit_net(cfg) -> Net:
    p = cfg.inpaint
    return Net("dit", "dit", (cfg.diffusion.latent_channels, p.dit_layers, p.dit_heads, p.dit_head_dim, p.dit_patch),
               latent_size(cfg), cfg.diffusion.latent_channels)


def build_net(net: Net, cfg=None):
    """The torch module of ``net`` and a function ``run(x)`` that passes a batch through it."""
    import torch

    if net.family == "classifier":
        from .models import build_model

        model = build_model(cfg, 30, np.eye(30, dtype=np.uint8)[np.arange(90) % 30])
        return model, model
    if net.family == "vae":
        from .diffusion.models import build_vae

        latent, channels = net.spec
        vae = build_vae(1, latent, channels)
        return vae, lambda x: vae.decode(vae.encode(x).latent_dist.sample()).sample
    if net.family == "unet":
        from .diffusion.models import build_unet, predict_noise

        latent, channels, dim, levels, pooled, tokens, labels = net.spec
        unet = build_unet(net.image_size, latent, channels, dim, levels, pooled_condition=pooled, label_dim=labels)

        def run(x):
            cond = torch.zeros(len(x), tokens, dim, device=x.device)
            y = torch.zeros(len(x), labels, device=x.device) if labels else None
            return predict_noise(unet, x, torch.full((len(x),), 500, device=x.device), cond, y)
        return unet, run
    if net.family == "dit":
        from .inpaint.normal_dit import build_dit

        latent, layers, heads, head_dim, patch = net.spec
        dit = build_dit(net.image_size, latent, layers, heads, head_dim, patch)

        def run(x):
            return dit(x, timestep=torch.full((len(x),), 500, device=x.device),
                       class_labels=torch.zeros(len(x), dtype=torch.long, device=x.device)).sample
        return dit, run
    raise EstimateError(f"unknown network family {net.family!r}")


def forward_flops(net: Net, cfg=None) -> float:
    """FLOPs of one image's forward pass (torch's FlopCounterMode, on the CPU)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model, run = build_net(net, cfg)
    model.eval()
    x = torch.randn(1, net.channels, net.image_size, net.image_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        run(x)
    return float(counter.get_total_flops())


def _tensor(out):
    """The main output of a network: a classifier's logits, a model's first output."""
    if isinstance(out, dict):
        return out["logits"] if "logits" in out else next(iter(out.values()))
    return out[0] if isinstance(out, (tuple, list)) else out


def measured_rates(net: Net, cfg, device, batch: int) -> tuple[float, float]:
    """(training, forward) images per second of ``net`` on ``device``: best of a few timed steps."""
    import torch

    from .runtime import images_per_second

    model, run = build_net(net, cfg)
    model = model.to(device).train()
    if device.type == "cpu":
        batch = min(batch, 8)       # the rate per image hardly changes beyond this on a CPU
    x = torch.randn(batch, net.channels, net.image_size, net.image_size, device=device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    amp = device.type == "cuda"

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def train_step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = _tensor(run(x)).float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()

    @torch.no_grad()
    def forward():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            run(x)
        sync()

    train_step()
    train = images_per_second(train_step, batch, repeats=2)
    model.eval()
    forward()
    return train, images_per_second(forward, batch, repeats=2)


def kind_of(name: str) -> str:
    kinds = devices()["kinds"]
    for prefix, kind in kinds.items():
        if name.lower().startswith(prefix):
            return kind
    return "conv"


# ----------------------------------------------------------------------------- work

@dataclass
class Work:
    """Passes of images through one network (``train`` or ``forward``), or ``render``/``read`` rows."""

    what: str
    n: float
    net: Net | None = None
    cfg: object = None


@dataclass
class StageEstimate:
    stage: str
    to_compute: int = 0
    cached: int = 0
    seconds: float = 0.0
    work: Counter = field(default_factory=Counter)      # "train passes", "forward passes", "renders" -> n

    def line(self, width: int) -> str:
        work = ", ".join(f"{_count(n)} {what}" for what, n in self.work.items() if n) or "-"
        return (f"{self.stage:<{width}}  {self.to_compute:>6}  {self.cached:>6}  {_duration(self.seconds):>10}  {work}")


def _count(n: float) -> str:
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.0f} k" if n >= 1e4 else f"{n:.0f}"


def _duration(s: float) -> str:
    if s >= 2 * 86400:
        return f"{s / 86400:.1f} days"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.2f} h"


class Counts:
    """Row counts of image sets and extra sets, from the cohort (memoised per request)."""

    def __init__(self, runner):
        self.runner = runner
        self._memo: dict = {}

    def of(self, req) -> float:
        """How many images an input request holds (at most, for filtered or inpainted sets)."""
        if req is None:
            return 0.0
        from .graph import Const

        if isinstance(req, Const):
            return float(len(getattr(req.value, "images", req.value)))
        ident = self.runner.identity(req)
        if ident not in self._memo:
            try:
                self._memo[ident] = float(self._count(req))
            except (ValueError, KeyError) as err:     # the run would stop here too
                raise EstimateError(f"cannot count the images of the '{req.stage}' stage "
                                    f"({req.params.get('rows') or req.params.get('kind') or ''}): {err}") from None
        return self._memo[ident]

    def _count(self, req) -> int:
        from .stages import ROWS

        p, cfg = req.params, req.cfg
        if req.stage == "image-set":
            return len(ROWS[p["rows"]].pick(cfg, self.cohort(req)))
        if req.stage == "samples":
            return self.samples(req)
        if req.stage == "synthetic-set":
            return self.of(p["samples"])
        if req.stage in ("inpainted-set", "copies-set"):
            inp = p["inpainted"] if req.stage == "copies-set" else req
            return self.inpainted(inp)
        if req.stage == "extra-set":
            return sum(self.of(v) for k, v in p.items() if k.startswith("part"))
        if req.stage == "control-set":      # as many images as the synthetic set it controls
            return self.of(p["synthetic"])
        if req.stage == "ideal-set":
            return sum(self.budget(req, p["scale"]))
        raise EstimateError(f"cannot count the images of a '{req.stage}' input")

    def cohort(self, req):
        from .graph import Request

        from .graph import Const

        co = req.params.get("cohort")
        if isinstance(co, Const):
            return co.value
        return self.runner.value(co if co is not None else Request("cohort", req.cfg))

    def groups(self, req) -> list[str]:
        return list(self.cohort(req).groups)

    def samples(self, req) -> int:
        d, kind = req.cfg.diffusion, req.params["kind"]
        if kind == "unconditional":
            return max(d.n_sweep_per_class * len(self.targets(req)), 8)
        per_class = self.budget(req)
        return sum(min(n, d.n_sweep_per_class) for n in per_class) if kind == "sweep" else sum(per_class)

    def targets(self, req) -> list[int]:
        from .diffusion.generate import target_classes

        return target_classes(req.cfg, self.groups(req))

    def budget(self, req, scale: float = 1.0) -> list[int]:
        """The synthetic budget per target class (:func:`trcgl.diffusion.generate.budget_counts`)."""
        from types import SimpleNamespace

        from .diffusion.generate import budget_counts
        from .graph import Const

        train = req.params["train"]
        Y = train.value.Y if isinstance(train, Const) else self.labels(train)
        return budget_counts(req.cfg, SimpleNamespace(Y=Y), self.targets(req), scale)

    def labels(self, image_set) -> np.ndarray:
        """The label rows an ``image-set`` request picks from its cohort."""
        from .stages import ROWS

        co = self.cohort(image_set)
        return co.Y[ROWS[image_set.params["rows"]].pick(image_set.cfg, co)]

    def generator_rows(self, req) -> tuple[int, int]:
        """(rows, rows per epoch with repeats) the diffusion UNet of a ``prompt-diffusion`` request
        learns from (:func:`trcgl.diffusion.training.diffusion_rows` and ``epoch_rows``)."""
        from types import SimpleNamespace

        from .diffusion.training import diffusion_rows, epoch_rows
        from .graph import Const

        train = req.params["train"]
        Y = train.value.Y if isinstance(train, Const) else self.labels(train)
        idx = diffusion_rows(req.cfg, SimpleNamespace(Y=Y), int(req.params["seed"]))
        return len(idx), int(epoch_rows(req.cfg, Y[idx], self.groups(req)).sum())

    def inpainted(self, req) -> int:
        """Rows with a head finding and a finding of ``inpaint.keep_groups`` (the guard may keep fewer)."""
        train = req.params["train"]
        Y = self.labels(train)
        groups = np.asarray(self.cohort(train).groups)
        head = Y[:, groups == "head"].any(1)
        keep = Y[:, np.isin(groups, list(req.cfg.inpaint.keep_groups))].any(1)
        return int((head & keep).sum())


def repaint_steps(cfg) -> int:
    """DiT passes per image of RePaint (its schedule with jumps back)."""
    from diffusers import RePaintScheduler

    p = cfg.inpaint
    s = RePaintScheduler(num_train_timesteps=cfg.diffusion.train_timesteps)
    s.set_timesteps(p.steps, p.jump_length, p.jump_n_sample)
    return len(s.timesteps)


def stage_work(req, counts: Counts) -> list[Work]:
    """The work of one request (see the module docstring)."""
    cfg, p, stage = req.cfg, req.params, req.stage
    if stage == "image-set":
        return [Work("render" if cfg.data.source == "phantom" else "read", counts.of(req), cfg=cfg)]
    if stage == "classifier":
        t = cfg.train
        n = counts.of(p["train"]) + counts.of(p.get("extra"))
        n_sel = counts.of(p["select"])
        epochs = t.warmup_epochs + t.finetune_epochs
        net = classifier_net(cfg)
        if "train_features" in p:    # heads on cached features: the backbone never runs
            return [Work("head", epochs * (n + n_sel), net, cfg)]
        return [Work("train", t.finetune_epochs * n, net, cfg),
                Work("forward", t.warmup_epochs * n + epochs * n_sel, net, cfg)]
    if stage == "finetune":     # stage 2 only (its stage 1 is the start run, a request of its own); a
        t = cfg.train           # whole-network training pass counted even where only the last stages learn
        n, n_sel = counts.of(p["train"]) + counts.of(p.get("extra")), counts.of(p["select"])
        return [Work("train", t.finetune_epochs * n, classifier_net(cfg), cfg),
                Work("forward", t.finetune_epochs * n_sel, classifier_net(cfg), cfg)]
    if stage == "predictions":
        model = p["model"]
        kind = "head" if "features" in p else "forward"
        return [Work(kind, counts.of(p["images"]), classifier_net(model.cfg), model.cfg)]
    if stage == "features":
        return [Work("forward", counts.of(p["images"]), classifier_net(cfg), cfg)]
    if stage == "pretrain":
        pcfg = cfg      # the request's configuration is the pretraining recipe (trcgl.stages.pretrain)
        n, n_sel = counts.of(p["pool"]), counts.of(p["select"])
        return [Work("train", pcfg.train.finetune_epochs * n, classifier_net(pcfg), pcfg),
                Work("forward", pcfg.train.finetune_epochs * n_sel, classifier_net(pcfg), pcfg)]
    if stage == "ideal-set" or (stage == "control-set" and p["kind"] == "ideal-kept"):
        return [Work("render" if cfg.data.source == "phantom" else "read", counts.of(req), cfg=cfg)]
    if stage == "synthetic-set":
        f = p["filter"]
        return [Work("forward", counts.of(p["samples"]) + counts.of(p["select"]), classifier_net(f.cfg), f.cfg)]
    if stage in ("vae", "prompt-diffusion", "normal-dit"):
        if stage == "normal-dit":
            rows, epochs, net = counts.of(p["normals"]), cfg.inpaint.epochs, dit_net(cfg)
        elif stage == "vae":
            rows = counts.of(p["train"])
            epochs, net = cfg.diffusion.vae_epochs, vae_net(cfg)
        else:
            rows, per_epoch = counts.generator_rows(req)
            return [Work("train", per_epoch * cfg.diffusion.epochs, unet_net(cfg), cfg),
                    Work("forward", rows, vae_net(cfg), cfg)]
        return [Work("train", rows * epochs, net, cfg), Work("forward", rows, vae_net(cfg), cfg)]
    if stage == "samples":
        n = counts.of(req)
        guided = 1 if p["kind"] == "unconditional" else 2
        return [Work("forward", n * cfg.diffusion.sampling_steps * guided, unet_net(cfg), cfg),
                Work("forward", n, vae_net(cfg), cfg)]
    if stage == "inpainted-set":
        n = counts.of(req)
        cam = p["cam"]
        return [Work("forward", n * repaint_steps(cfg), dit_net(cfg), cfg),
                Work("train", n, classifier_net(cam.cfg), cam.cfg),
                Work("forward", 2 * n, vae_net(cfg), cfg)]
    return []


# ----------------------------------------------------------------------------- rates

class Rates:
    """Seconds per unit of work: measured on a device, or from a reference device's FLOP rates."""

    def __init__(self, ref: str | None = None, device=None):
        self.ref = reference(ref) if ref else None
        self.ref_name = ref
        self.device = device
        self._nets: dict = {}
        self._render: dict = {}

    def describe(self) -> str:
        if self.ref is not None:
            return f"on the reference device '{self.ref_name}' ({self.ref['description']}; configs/devices.yaml)"
        from .data.render import render_processes

        return (f"measured on this machine's {self.device} (a few timed steps per network; phantoms rendered by "
                f"{render_processes()} processes)")

    def processes(self) -> int:
        from .data.render import render_processes

        return int(self.ref["cpu_cores"]) if self.ref is not None else render_processes()

    def overhead(self, stage: str) -> float:
        """Seconds a computed stage costs besides its work: starting, loading inputs, building the
        network, checkpoints, writing the artifact (more for the training stages)."""
        if stage in FIXED_S:
            return FIXED_S[stage]
        ref = self.ref or OVERHEAD_S
        return float(ref["overhead_s"] if stage in TRAINING_STAGES else ref["light_overhead_s"])

    def seconds(self, w: Work) -> float:
        if w.n <= 0:
            return 0.0
        if w.what in ("render", "read"):
            per = self.render_seconds(w.cfg) if w.what == "render" else self.read_seconds()
            return w.n * per / self.processes()
        train, forward = self.net_rates(w.net, w.cfg)
        if w.what == "head":   # heads on cached features: a small share of a forward pass (an assumption)
            return w.n * HEAD_SHARE / forward
        return w.n / (train if w.what == "train" else forward)

    def read_seconds(self) -> float:
        return float(self.ref["read_ms"]) / 1000 if self.ref is not None else 0.03

    def render_seconds(self, cfg) -> float:
        """Seconds to render one phantom at the profile's sizes on one CPU core (measured here)."""
        key = (cfg.phantom.render_size, cfg.data.image_size)
        if key not in self._render:
            from .data.phantom import PhantomRenderer, downsample

            r = PhantomRenderer(["cardiomegaly", "pleural effusion", "nodule"], size=cfg.phantom.render_size)
            r.render("estimate-warmup", ["nodule"])
            start, n = time.perf_counter(), 4
            for k in range(n):
                img, m = r.render(f"estimate-{k}", ["pleural effusion", "nodule"][: k % 3])
                downsample(img, m, cfg.data.image_size)
            self._render[key] = (time.perf_counter() - start) / n
        return self._render[key]

    def net_rates(self, net: Net, cfg) -> tuple[float, float]:
        """(training, forward) images per second of a network."""
        if net not in self._nets:
            if self.ref is not None:
                flops = forward_flops(net, cfg)
                forward = self.ref["tflops"][kind_of(net.name)] * 1e12 * self.ref["utilisation"] / flops
                train = forward * self.ref["train_efficiency"] / self.ref["train_factor"]
                self._nets[net] = (train, forward)
            else:
                self._nets[net] = measured_rates(net, cfg, self.device, _batch(net, cfg))
        return self._nets[net]


def _batch(net: Net, cfg) -> int:
    if net.family == "classifier":
        return cfg.train.batch_size
    return cfg.inpaint.batch_size if net.family == "dit" else cfg.diffusion.batch_size


# ----------------------------------------------------------------------------- the estimate

FIXED_S = {"label-table": 30.0, "cohort": 10.0}
#: the cost of a pass through the heads alone, as a share of a whole network's forward pass
#: (an assumption: the heads are a few small layers on a feature map the backbone made once)
HEAD_SHARE = 0.05
TRAINING_STAGES = ("classifier", "finetune", "vae", "prompt-diffusion", "normal-dit")
#: the overheads of the measured estimate (a reference device names its own)
OVERHEAD_S = {"overhead_s": 2.0, "light_overhead_s": 0.5}


@dataclass
class Estimate:
    target: str
    profile: str
    rates: str
    stages: list[StageEstimate]

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

    def text(self) -> str:
        width = max([len("stage")] + [len(s.stage) for s in self.stages])
        lines = [f"estimated time of `run {self.target}` (profile {self.profile}), {self.rates}.",
                 "An estimate from a cost model (trcgl/estimate.py), not a measurement; expect the truth within "
                 "about a factor of two.",
                 f"{'stage':<{width}}  {'to run':>6}  {'cached':>6}  {'estimated':>10}  work"]
        lines += [s.line(width) for s in self.stages]
        lines.append(f"{'total':<{width}}  {sum(s.to_compute for s in self.stages):>6}  "
                     f"{sum(s.cached for s in self.stages):>6}  {_duration(self.seconds):>10}")
        return "\n".join(lines)


def estimate(cfg, target: str, requests, rates: Rates, cache=None, progress=None) -> Estimate:
    """The estimate of resolving ``requests`` (the target's): one :class:`StageEstimate` per stage,
    in the order the plan first meets them."""
    from .graph import Runner

    runner = Runner(cache)
    plan = runner.plan(requests)
    counts = Counts(runner)
    per: dict[str, StageEstimate] = {}
    labels = {"train": "train passes", "forward": "forward passes", "head": "head passes", "render": "renders",
              "read": "reads"}
    todo = [e for e in plan if not e.cached]
    for e in plan:
        s = per.setdefault(e.stage, StageEstimate(e.stage))
        if e.cached:
            s.cached += 1
    seconds: dict[str, float] = defaultdict(float)
    for k, e in enumerate(todo):
        if progress:
            progress(k, len(todo), e.stage)
        s = per[e.stage]
        s.to_compute += 1
        seconds[e.stage] += rates.overhead(e.stage)
        for w in stage_work(e.request, counts):
            s.work[labels[w.what]] += w.n
            seconds[e.stage] += rates.seconds(w)
    for name, s in per.items():
        s.seconds = seconds.get(name, 0.0)
        s.work = Counter({k: v for k, v in s.work.items() if v})
    return Estimate(target, cfg.profile, rates.describe(), list(per.values()))
