"""``safediffusion`` command line: train | generate | evaluate | compare | coco-reference | table.

Exit codes: 0 done; 2 bad input (one line on stderr, ``error: <problem>; <fix>``, including an output folder
in use by another run); 3 training diverged (non-finite values for ``train.max_nonfinite_epochs`` epochs in a
row); 75 stopped by SIGTERM / SIGUSR1 after writing a checkpoint (re-run the same command to resume);
130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from safediffusion.config import DEFAULT_CONFIG, resolve_config_path
from safediffusion.errors import UserError
from safediffusion.rl.preemption import Preempted


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="GRPO safety post-training (default: the miniature world)",
                       description="Run (or resume) GRPO training. Overrides: key=value, e.g. train.epochs=3.")
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help=f"YAML file or shipped config name (default: {DEFAULT_CONFIG})")
    p.add_argument("--output-dir", default=None, help="run directory (default: runs/<config name>); "
                   "re-running on the same directory resumes from its last checkpoint")
    p.add_argument("--no-report", action="store_true", help="skip the evaluation report after training")
    p.add_argument("overrides", nargs="*", help="config overrides key=value")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from safediffusion.config import load_config

    path = resolve_config_path(args.config)
    cfg = load_config(path, args.overrides)
    output_dir = Path(args.output_dir or Path("runs") / path.stem)
    if args.no_report:
        cfg.eval.enabled = False
    from safediffusion.rl.trainer import GRPOTrainer

    trainer = GRPOTrainer(cfg, output_dir)
    final = trainer.train()
    if trainer.accelerator.is_main_process:
        print(f"final model: {final}")
    if cfg.eval.enabled and trainer.accelerator.is_main_process:
        report = training_report_writer(cfg.eval.suites)(cfg, output_dir, args.command_line)
        print(f"report: {report}")
    return 0


def training_report_writer(suites: list[str]) -> Callable[..., Path]:
    """The one writer registered (:data:`safediffusion.registry.TRAINING_REPORTS`) for all of ``suites``."""
    from safediffusion.registry import TRAINING_REPORTS

    writers = {TRAINING_REPORTS.get(name) for name in suites}
    if len(writers) != 1:
        raise UserError(f"eval.suites {suites} do not share one report", "list suites of one kind, e.g. "
                        "[mini-i2p, mini-geneval], or run `safediffusion evaluate` for the others")
    return writers.pop()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="safediffusion", description=__doc__.splitlines()[0])
    from safediffusion import __version__

    parser.add_argument("--version", action="version", version=f"safediffusion {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)
    try:
        from safediffusion.eval import commands as eval_commands
    except ImportError:  # pragma: no cover - the eval extra is part of the package
        eval_commands = None
    if eval_commands is not None:
        for name, helptext in (("generate", "generate images for a prompt file"),
                               ("evaluate", "evaluate a model on a safety / quality suite"),
                               ("compare", "side-by-side table of several evaluation runs"),
                               ("coco_reference", "build the COCO real-image folder for FID")):
            p = sub.add_parser(name.replace("_", "-"), help=helptext)
            getattr(eval_commands, f"add_{name}_args")(p)
            p.set_defaults(func=getattr(eval_commands, f"run_{name}"))
    from safediffusion.registry import COMMANDS

    for name, entry in COMMANDS.items():  # commands of plugins, e.g. the miniature world's `table`
        p = sub.add_parser(name, help=entry.help)
        entry.add_args(p)
        p.set_defaults(func=entry.run)
    return parser


def _quiet_image_processor_fallback() -> None:
    """transformers 5 without torchvision warns once, on diffusers' import of ``CLIPImageProcessor``, that it
    falls back to the PIL processor — which is what we want. Trigger that import with warnings muted."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        import transformers
        from diffusers import StableDiffusionPipeline  # noqa: F401

        _ = transformers.CLIPImageProcessor, transformers.SiglipImageProcessor
    finally:
        logging.set_verbosity(level)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _quiet_image_processor_fallback()
    if not argv:
        argv = ["train"]
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["safediffusion", *argv])  # what reports print as "Reproduce"
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except Preempted as e:
        print(f"preempted: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume from the last checkpoint", file=sys.stderr)
        return 130


def _entry() -> None:  # pragma: no cover
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())


if __name__ == "__main__":  # pragma: no cover
    _entry()
