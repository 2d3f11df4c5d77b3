"""``qa-lirpa train CONFIG [--set key=value ...]``: QA-IBP certified training."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..config import CONFIG_DIR, load_config
from .config import TrainConfig, validate
from .trainer import train


def shipped_training_configs() -> list[str]:
    """Names of the shipped training configs (``qa_lirpa/configs/*.yaml`` except ``verify_*``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if not p.stem.startswith("verify_"))


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="QA-IBP certified training of a quantized network",
        description="Train a quantized network with quantization-aware IBP (auto_LiRPA). CONFIG is the "
                    f"name of a shipped config ({', '.join(shipped_training_configs())}) or a YAML file "
                    "holding overrides of the defaults "
                    "(qa_lirpa/train/config.py). Writes checkpoint.pt, config.yaml, metrics.csv, "
                    "training_curves.png and final.json into out_dir (default runs/<config name>).")
    p.add_argument("config", metavar="CONFIG", help="shipped config name or YAML path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set schedule.eps=4 --set model.bits=6 (repeatable)")
    p.add_argument("--out-dir", help="output folder (same as --set out_dir=DIR)")
    p.add_argument("--resume", action="store_true", help="continue from out_dir/checkpoint.pt")
    p.add_argument("--overwrite", action="store_true", help="replace a checkpoint already in out_dir")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="same as --set device=...")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    p.set_defaults(func=run)


def load_train_config(source: str, overrides: list[str], out_dir: str | None = None):
    """The effective :class:`TrainConfig`: defaults, the YAML, then overrides; a missing out_dir
    becomes ``runs/<config name>``."""
    cfg = load_config(TrainConfig, source, overrides)
    if out_dir is not None:
        cfg.out_dir = out_dir
    if cfg.out_dir is None:
        cfg.out_dir = str(Path("runs") / Path(str(source)).stem)
    validate(cfg)
    return cfg


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.resume:
        overrides.append("resume=true")
    if args.device:
        overrides.append(f"device={args.device}")
    if args.no_progress:
        overrides.append("progress=false")
    cfg = load_train_config(args.config, overrides, args.out_dir)
    result = train(cfg, overwrite=args.overwrite, log=lambda s: print(s, flush=True))
    print(f"wrote {result.out_dir}/checkpoint.pt, config.yaml, metrics.csv, training_curves.png"
          + (", final.json" if result.final else ""), flush=True)
    return 0
