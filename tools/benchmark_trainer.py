"""The input pipeline's benchmark (issue 15, item 3): images per second of the classifier
trainer's steps against a bare timm loop on the same model, image size and batch size.

    .venv/bin/python tools/benchmark_trainer.py [--device cpu|cuda] [--steps 10] [--repeats 3]
        [--backbone convnextv2_atto] [--size 64] [--batch 32] [--arch timm]

Time it on a quiet machine (no other torch job running: check `uptime` first). It prints one
JSON object; the data chapter makes the same measurement in every book run.
"""
import argparse
import json

import torch

from trcgl import load_config
from trcgl.train import trainer_benchmark


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--arch", default="timm", help="timm: the plain timm network; trcgl: TRCGL-Net on it")
    p.add_argument("--backbone", default="convnextv2_atto")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args()
    cfg = load_config("smoke", {"model.arch": args.arch, "model.backbone": args.backbone, "data.image_size": args.size,
                                "train.batch_size": args.batch}, device=args.device)
    result = trainer_benchmark(cfg, args.steps, args.repeats, torch.device(args.device))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
