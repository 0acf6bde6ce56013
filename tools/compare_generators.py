"""The generator recipes of issue 21 compared on the ladder's rungs (c) and (c'), one generator
seed each: per variant (config overrides of the profile's recipe), the oracle ROC AUC of each
target class's prompted samples against real test negatives (c) and against the model's
unconditional samples (c'), with intervals, and the classes that meet chapter 2's bar.

    .venv/bin/python tools/compare_generators.py [--profile cpu] [--variant NAME ...]
        [--set KEY=VALUE ...]

Variants: trcgl.views.diffusion.GENERATOR_VARIANTS (default: all of them; each trains a
generator, about 10 minutes at the cpu profile on one core). ``--set`` adds overrides to every
variant. Models and samples are cached stages in the run's cache (runs/), so a second call only
scores. A bad name or key is one line and exit code 2.
"""
import argparse
import sys

from trcgl import load_config
from trcgl.cli import guarded
from trcgl.config import ConfigError, parse_assignment
from trcgl.runtime import torch_threads
from trcgl.views.diffusion import GENERATOR_VARIANTS, recipe_rungs


def compare(args) -> int:
    names = args.variant or list(GENERATOR_VARIANTS)
    unknown = [n for n in names if n not in GENERATOR_VARIANTS]
    if unknown:
        raise ConfigError(f"unknown generator variant {unknown[0]!r} (known: {', '.join(GENERATOR_VARIANTS)})")
    extra = dict(parse_assignment(s) for s in args.set)
    cfgs = {n: load_config(args.profile, {**extra, **GENERATOR_VARIANTS[n]}, device=args.device) for n in names}
    for name, cfg in cfgs.items():
        with torch_threads(cfg.threads):
            table, good = recipe_rungs(cfg, device=args.device)
        print(f"\n{name}: {len(good)} of {len(table)} target classes meet c >= 0.8 with the (c') interval above 0.5"
              + (f" ({', '.join(good)})" if good else ""))
        print(table.round(3).to_string(), flush=True)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="cpu")
    p.add_argument("--device", default="cpu")
    p.add_argument("--variant", action="append", default=[], help="a name of GENERATOR_VARIANTS (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an override for every variant")
    return guarded(lambda: compare(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
