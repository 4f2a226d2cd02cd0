"""Command line: ``python -m cifarsep_lib {train,evaluate,rules} ...``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

AUGMENTATION_OPTIONS = ("translate", "rotate", "erasing", "whole_pixel_shifts", "alternating_flips", "mixup")
AUGMENTATION_FLAGS = {name: f"--{name.replace('_', '-')}" for name in AUGMENTATION_OPTIONS}


def _train(args) -> int:
    from . import training

    fields = {f.name for f in dataclasses.fields(training.Recipe)}
    overrides = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    recipe = training.RECIPES[args.recipe](**overrides)
    test_at = [int(e) for e in args.test_at.split(",") if e.strip()]  # "50,95," and "" too
    verbose = args.verbose if args.verbose == "auto" else int(args.verbose)
    training.train(
        recipe,
        out_dir=args.out,
        tensorboard=not args.no_tensorboard,
        test_at_epochs=test_at,
        deterministic=args.deterministic,
        verbose=verbose,
        distribution=args.distribution,
        workers=args.workers,
    )
    return 0


def _evaluate(args) -> int:
    from . import evaluation

    report = evaluation.evaluate_file(args.model, tta=args.tta, data_dir=args.data_dir, batch_size=args.batch_size)
    print(json.dumps(report))
    return 0


def _rules(args) -> int:
    import keras

    from . import rules

    model = keras.saving.load_model(args.model, compile=False)
    rules.check_rules(model, allow_conv2d=args.allow_conv2d)
    return 0


def main(argv=None) -> int:
    from .devices import DISTRIBUTIONS  # every subcommand needs Keras anyway
    from .models import MODELS
    from .training import RECIPES

    parser = argparse.ArgumentParser(prog="python -m cifarsep_lib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model with the series' recipe")
    t.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default="series",
        help="series (default): the series' recipe; assignment: the course assignment's (Adam, no augmentation, "
        "batch 128, 50 epochs, base_model); the options below override either, but the augmentation options "
        f"({', '.join(AUGMENTATION_FLAGS.values())}) apply to the series' only",
    )
    t.add_argument("--model", choices=list(MODELS), help="default: sepnet (base_model with --recipe assignment)")
    t.add_argument(
        "--epochs",
        type=int,
        help="epochs to train (default 150, 50 with --recipe assignment; with --minutes: at most, "
        "and without --epochs no practical limit)",
    )
    t.add_argument(
        "--minutes",
        type=float,
        help="a time budget: train this many minutes (validation not counted), the learning-rate "
        "schedule stretched over the budget, then stop",
    )
    t.add_argument("--batch-size", dest="batch_size", type=int)
    t.add_argument(
        "--peak-lr",
        dest="peak_lr",
        type=float,
        help="the learning rate at the end of the warm-up (default 0.4, 0.2 until 2026-12-07; 0.001 with "
        "--recipe assignment)",
    )
    t.add_argument(
        "--weight-decay",
        dest="weight_decay",
        type=float,
        help="decoupled weight decay: each step shrinks the convolution and dense kernels by learning rate x this "
        "(default 0.0025, 0.0005 until 2026-12-05; 0 with --recipe assignment)",
    )
    t.add_argument("--label-smoothing", dest="label_smoothing", type=float)
    t.add_argument(
        "--translate",
        type=float,
        metavar="FRACTION",
        help="augment with random shifts of up to this fraction of the image (default 0.125: 4 pixels)",
    )
    t.add_argument(
        "--whole-pixel-shifts",
        dest="whole_pixel_shifts",
        action="store_const",
        const=True,
        help="shift by whole pixels (nearest-neighbour, like pad-and-crop) instead of bilinear fractional shifts",
    )
    t.add_argument(
        "--alternating-flips",
        dest="alternating_flips",
        action="store_const",
        const=True,
        help="flip each training image every other epoch (airbench's alternating flip) instead of at random",
    )
    t.add_argument(
        "--fused-batchnorm",
        dest="fused_batchnorm",
        action=argparse.BooleanOptionalAction,
        help="BatchNorm with TensorFlow's fused kernel (layers.FusedBatchNormalization, the same arithmetic) or,"
        " with --no-fused-batchnorm, Keras' own layer (default: fused in the series' networks, Keras' own in the"
        " base models)",
    )
    t.add_argument("--rotate", type=float, help="augment with random rotations of up to this many degrees")
    t.add_argument(
        "--erasing",
        type=float,
        metavar="P",
        help="augment by erasing a random rectangle of each training image with probability P (e.g. 0.5)",
    )
    t.add_argument(
        "--mixup",
        type=float,
        metavar="ALPHA",
        help="blend each training image and its label with a random partner's (MixUp), the weight drawn from "
        "Beta(ALPHA, ALPHA), e.g. 0.2",
    )
    t.add_argument(
        "--batchnorm-images",
        dest="batchnorm_images",
        type=int,
        metavar="N",
        help="before each validation, recompute BatchNorm's statistics on N un-augmented training images "
        "(default 5000, 0 with --recipe assignment; 0: keep the moving averages of training)",
    )
    t.add_argument(
        "--ema",
        dest="ema_momentum",
        type=float,
        metavar="MOMENTUM",
        help="average the weights, with this momentum per step (e.g. 0.995); validation, checkpoints and "
        "test points use the average, and the model ends with it",
    )
    t.add_argument(
        "--low-res-epochs",
        dest="low_res_epochs",
        type=int,
        metavar="N",
        help="progressive resizing: train the first N epochs on images downscaled to --low-res-size pixels "
        "(faster epochs on a CPU), the rest at full size",
    )
    t.add_argument("--low-res-size", dest="low_res_size", type=int, metavar="PIXELS", help="default 16")
    t.add_argument(
        "--teacher",
        dest="teachers",
        action="append",
        metavar="FILE",
        help="knowledge distillation: a trained .keras model whose flip-TTA probabilities on the training images "
        "are mixed into the targets (repeat for an ensemble; use runs with the same --seed, which share the "
        "validation split)",
    )
    t.add_argument(
        "--teacher-weight",
        dest="teacher_weight",
        type=float,
        metavar="W",
        help="weight of the teachers' probabilities in the targets, the rest one-hot labels (default 0.5)",
    )
    t.add_argument("--train-subset", dest="train_subset", type=int, help="train on this many images only")
    t.add_argument(
        "--val-size",
        dest="val_size",
        type=int,
        help="validation images held out of the 50,000 (default 5000); 0: train on all of them, "
        "keep the last epoch's model",
    )
    t.add_argument("--seed", type=int)
    t.add_argument("--out", default="runs/sepnet", help="folder for checkpoints and logs")
    t.add_argument(
        "--test-at", default="", help="comma-separated epochs at which to report test accuracy, plain and flip-TTA"
    )
    t.add_argument("--no-tensorboard", action="store_true")
    t.add_argument("--deterministic", action="store_true", help="deterministic TensorFlow kernels (slower)")
    t.add_argument("--verbose", default="auto", help="Keras progress: auto, 0, 1 or 2")
    t.add_argument(
        "--distribution",
        choices=DISTRIBUTIONS,
        default="none",
        help="data-parallel training on all local devices: TensorFlow MirroredStrategy (mirrored, data_parallel) "
        "or TPUStrategy (tpu); JAX keras.distribution.DataParallel (any but none). --batch-size is the global "
        "batch: multiply it and --peak-lr by the number of devices to keep the per-device batch",
    )
    t.add_argument(
        "--workers",
        type=int,
        default=1,
        help="threads preparing training batches under the JAX or PyTorch backend; 1 is enough "
        "(the H100 runs used 4; README, 'Epoch boundaries with several workers')",
    )
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="test accuracy of a saved .keras model; last line is JSON")
    e.add_argument("model", help="path to a .keras file")
    e.add_argument("--tta", action="store_true", help="also average predictions with the flipped image")
    e.add_argument("--data-dir", default=None, help="folder holding cifar-10-batches-bin/ (default: $CIFARSEP_DATA)")
    e.add_argument("--batch-size", type=int, default=500)
    e.set_defaults(func=_evaluate)

    r = sub.add_parser("rules", help="check a saved model against the assignment's rules")
    r.add_argument("model")
    r.add_argument("--allow-conv2d", action="store_true")
    r.set_defaults(func=_rules)

    args = parser.parse_args(argv)
    if args.command == "train" and args.recipe == "assignment":
        # The assignment's recipe does not augment, so these would be ignored without a word.
        given = [flag for name, flag in AUGMENTATION_FLAGS.items() if getattr(args, name) is not None]
        if given:
            t.error(
                f"{', '.join(given)}: the assignment's recipe trains without augmentation (--recipe series augments)"
            )
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
