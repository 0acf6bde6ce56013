"""Train the toy classifier, autoencoder, UNet and DiT through the stage graph, then write their
final weights (the main process): ``python -m tests.multiprocess_train OUT [DEVICE]`` in one process, or
``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m tests.multiprocess_train OUT``
in two (gloo). tests/test_multiprocess.py runs both and compares. The sizes leave every short
last batch with a single row, so the second process trains on a stand-in row there."""
import json
import sys
from pathlib import Path

import numpy as np
import torch

from trcgl import load_config
from trcgl.cache import ArtifactCache
from trcgl.runtime import processes
from trcgl.stages import train_classifier, train_normal_dit, train_prompt_diffusion


def classifier_cfg(device="cpu"):
    return load_config("smoke", {
        "model.feature_stage": 2, "model.gcn_embed_dim": 16, "model.gcn_hidden_dim": 16,
        "train.warmup_epochs": 1, "train.finetune_epochs": 1, "train.batch_size": 16,
        "train.warmup_lr": 3e-3, "train.backbone_lr": 2e-3, "train.head_lr": 3e-3,
        "train.hflip": True, "train.grad_clip": 1.0, "train.ema": True, "train.ema_decay": 0.5,
        "train.extra_finetune_weight": 0.5, "pretrain.enabled": False}, device=device)


def diffusion_cfg(device="cpu"):
    return load_config("smoke", {
        "diffusion.vae_channels": [8, 8], "diffusion.unet_channels": [16, 32], "diffusion.attention_levels": 1,
        "diffusion.vae_epochs": 1, "diffusion.epochs": 2, "diffusion.batch_size": 16, "diffusion.lr": 2e-3,
        "diffusion.context_vectors": 2, "diffusion.max_length": 8, "diffusion.n_train": None,
        "diffusion.cond_dropout": 0.5, "diffusion.train_timesteps": 100,
        "inpaint.epochs": 2, "inpaint.batch_size": 16, "inpaint.dit_layers": 1, "inpaint.dit_heads": 2,
        "inpaint.dit_head_dim": 8}, device=device)


def main(out: Path, device: str = "cpu") -> None:
    from tests.test_diffusion_pipeline import TOY
    from tests.test_diffusion_pipeline import toy_set as diffusion_set
    from tests.test_train import GROUPS, toy_set

    from trcgl.diffusion.models import build_vae

    cache = ArtifactCache(out / "runs")
    train, extra = toy_set(41, 0), toy_set(8, 4)     # 49 rows in global batches of 16: 16, 16, 16, 1
    clf = train_classifier(classifier_cfg(device), train, toy_set(24, 1), GROUPS, extra=extra, cache=cache)
    cfg = diffusion_cfg(device)
    diff = train_prompt_diffusion(cfg, TOY, diffusion_set(33, 2), diffusion_set(8, 3), cache=cache)
    torch.manual_seed(0)
    dit = train_normal_dit(cfg, diffusion_set(17, 5), build_vae(1, 4, (8, 8)).eval(), cache=cache)
    if processes().is_main:
        weights = {f"classifier.{k}": v for k, v in clf.model.state_dict().items()}
        weights.update({f"vae.{k}": v for k, v in diff.pipeline.vae.state_dict().items()})
        weights.update({f"unet.{k}": v for k, v in diff.pipeline.unet.state_dict().items()})
        weights["context"] = diff.pipeline.context.vectors
        weights.update({f"dit.{k}": v for k, v in dit.pipeline.transformer.state_dict().items()})
        torch.save(weights, out / "weights.pt")
        history = {"classifier": clf.history.loss.tolist(), "best_epoch": clf.best_epoch,
                   "unet": diff.history.loss.tolist(), "dit": dit.history.loss.tolist(),
                   "selection_probs": np.asarray(clf.selection_probs).tolist(),
                   "processes": json.loads((clf.folder / "result.json").read_text())["processes"]}
        (out / "history.json").write_text(json.dumps(history))


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main(Path(sys.argv[1]), *sys.argv[2:3])
