"""The ``fastdl`` command: demo, train, bench, info, warmup.

Exit status: 0 when training finished and beat chance; 2 for a problem with
what the user gave or the machine (a bad or unreadable file, an out-of-range
option, an unwritable or full output directory, a checkpoint that does not fit,
training that diverged), reported in one line on stderr and, for problems with
the input, before anything is written; 3 when training finished but never beat
chance (outputs are written, with a warning); 130 when interrupted. Any other
exception is a bug in fastdl and keeps its traceback.
"""
import argparse
import errno
import json
import math
import os
import sys
import tempfile
import time

import numpy as np

MODELS = ("lenet5", "resnet8", "resnet20")
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad")
LAYOUTS = ("auto", "nchw", "nhwc")
# Smallest height and width each model takes: LeNet-5's two 2x2 poolings and
# 5x5 convolution, the ResNets' two stride-2 stages.
MIN_IMAGE_SIZE = {"lenet5": 8, "resnet8": 4, "resnet20": 4}
EXIT_OK, EXIT_USAGE, EXIT_CHANCE, EXIT_INTERRUPTED = 0, 2, 3, 130

EXIT_STATUS_HELP = """exit status:
  0    trained, and the model beats chance on the training or validation data
  2    bad input (data, options, checkpoint), an unwritable or full --out, or
       training diverged (the loss became NaN or infinite); one line on stderr
  3    trained, but never beat always guessing from the class frequencies
       (outputs are written; try a smaller --lr)
  130  interrupted (Ctrl-C): --resume continues from the last finished epoch"""


class UsageError(Exception):
    """A problem with the user's input: reported in one line, exit status 2."""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help line ends with its default (flags, which default to off, aside)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.option_strings and action.nargs != 0 and "%(default)" not in text
                and action.default not in (None, argparse.SUPPRESS)):
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line (a UsageError) rather than usage + error."""

    def error(self, message):
        raise UsageError("%s (see '%s --help')" % (message, self.prog))


def _int_at_least(low):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("expected an integer, got %r" % text) from None
        if value < low:
            raise argparse.ArgumentTypeError("must be >= %d, got %d" % (low, value))
        return value
    return parse


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number, got %r" % text) from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError("must be a finite number > 0, got %s" % text)
    return value


def _describe_os_error(error):
    """``path: reason`` for a failed read or write (a full disk gets a hint)."""
    reason = error.strerror or str(error)
    if error.errno == errno.ENOSPC:
        reason += " (free some space or choose another --out)"
    return "%s: %s" % (error.filename, reason) if error.filename else reason


def _short(text, limit=200):
    """``text`` on one line, cut to about ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit].rstrip(" ,") + " ..."


def _check_output_dir(path):
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".fastdl-write-test-"):
            pass
    except OSError as error:
        raise UsageError("cannot write to --out %s: %s" % (path, error.strerror or error))


def _make_optimizer(name, parameters, lr):
    from fastdl import optim
    if name == "sgd":
        return optim.SGD(parameters, lr=lr)
    if name == "momentum":
        return optim.SGD(parameters, lr=lr, momentum=0.9, nesterov=True)
    return {"adam": optim.Adam, "adamw": optim.AdamW, "rmsprop": optim.RMSprop,
            "adagrad": optim.Adagrad}[name](parameters, lr=lr)


def _check_input_shape(name, input_shape):
    channels, height, width = input_shape
    smallest = MIN_IMAGE_SIZE[name]
    if channels < 1 or height < smallest or width < smallest:
        raise UsageError("%s needs images of at least 1 channel and %dx%d pixels, got %d "
                         "channel(s) of %dx%d" % (name, smallest, smallest, channels, height,
                                                  width))
    if name == "lenet5" and height != width:
        raise UsageError("lenet5 needs square images, got %dx%d" % (height, width))


def _make_model(name, input_shape, num_classes):
    from fastdl import models
    _check_input_shape(name, input_shape)
    channels, height, width = input_shape
    try:
        if name == "lenet5":
            return models.lenet5(num_classes, channels, input_size=height)
        return getattr(models, name)(num_classes=num_classes, in_channels=channels)
    except ValueError as error:   # the model's own argument checks
        raise UsageError("%s cannot take %d classes of %dx%dx%d images: %s"
                         % (name, num_classes, channels, height, width, error)) from None


def _check_resume(path, model_name, input_shape, num_classes, args):
    """Load the checkpoint ``--resume`` names into a fresh model, optimizer and scheduler
    built like the real ones, so that a missing, corrupt or mismatched file fails here,
    in one line, before the real model (or the checkpoint itself) is touched."""
    from fastdl import random as fastdl_random
    from fastdl.optim.lr_scheduler import CosineAnnealingLR
    from fastdl.train.checkpoint import load_checkpoint
    if not os.path.isfile(path):
        raise UsageError("--resume: no checkpoint %s to resume from (run once without "
                         "--resume to start one)" % path)
    state = fastdl_random.get_rng_state()
    try:
        model = _make_model(model_name, input_shape, num_classes)
        optimizer = _make_optimizer(args.optimizer, model.parameters(), args.lr)
        extra = load_checkpoint(path, model, optimizer, CosineAnnealingLR(optimizer, args.epochs))
        epoch = int(extra.get("epoch", -1))
        history = extra.get("history", [])
        if not (isinstance(history, list) and all(isinstance(r, dict) for r in history)):
            raise ValueError("its training history is not a list of records")
    except KeyError as error:   # an entry another model or optimizer would have
        detail = str(error.args[0]) if error.args else ""
        if detail.startswith("optimizer."):
            detail = "it has no optimizer state %s" % detail
        raise UsageError("--resume: %s does not fit a %s model with the %s optimizer (%s)"
                         % (path, model_name, args.optimizer, _short(detail))) from None
    except (ValueError, TypeError, IndexError, AttributeError) as error:
        detail = _short(str(error), 400)
        raise UsageError("--resume: " + detail if path in detail else
                         "--resume: cannot resume from %s: %s" % (path, detail)) from None
    finally:
        fastdl_random.set_rng_state(state)
    if epoch + 1 >= args.epochs:
        print("fastdl: note: %s already holds epoch %d of %d: nothing left to train (raise "
              "--epochs to continue)" % (path, epoch + 1, args.epochs), file=sys.stderr)


def _chance_warning(records, train_targets, val_targets, num_classes, loss_fn):
    """None if some epoch beat chance, else the one-line warning to print.

    Chance is what a model learns from the class frequencies alone: always
    predicting the training set's most frequent class (accuracy), or the
    training class frequencies as probabilities (loss, by ``loss_fn``). An epoch
    beats it with a lower training or validation loss, or a higher validation
    accuracy.
    """
    from fastdl import autograd
    counts = np.bincount(train_targets, minlength=num_classes).astype(np.float64)
    log_prior = np.log(np.maximum(counts / max(counts.sum(), 1), 1e-12)).astype(np.float32)

    def chance_loss(targets):
        if len(targets) == 0:
            return math.nan
        logits = np.ascontiguousarray(np.broadcast_to(log_prior, (len(targets), num_classes)))
        with autograd.no_grad():
            return float(loss_fn(autograd.Tensor(logits), np.asarray(targets, np.int64)).item())

    majority = int(np.argmax(counts))
    chance = {"train_loss": chance_loss(train_targets), "val_loss": chance_loss(val_targets),
              "val_accuracy": float(np.mean(np.asarray(val_targets) == majority))
              if len(val_targets) else math.nan}

    def best(key):
        values = [r[key] for r in records if isinstance(r.get(key), float)
                  and math.isfinite(r[key])]
        if not values:
            return math.nan
        return max(values) if key.endswith("accuracy") else min(values)

    ours = {key: best(key) for key in chance}
    if (ours["train_loss"] < chance["train_loss"] or ours["val_loss"] < chance["val_loss"]
            or ours["val_accuracy"] > chance["val_accuracy"]):
        return None
    return ("training never beat chance: best val accuracy %.3f vs %.3f always guessing "
            "class %d, best train loss %.4g vs %.4g from the class frequencies alone; "
            "the outputs are written but the model learned nothing (try a smaller --lr, or "
            "check the labels)" % (ours["val_accuracy"], chance["val_accuracy"], majority,
                                   ours["train_loss"], chance["train_loss"]))


def _write_outputs(out, trainer, model, test_result, num_classes, wall_time, samples):
    import fastdl
    from fastdl.train import confusion_matrix, per_class_recall
    fastdl.save(model.state_dict(), os.path.join(out, "model.safetensors"))
    trainer.history.to_json(os.path.join(out, "history.json"))
    trainer.history.to_csv(os.path.join(out, "history.csv"))
    matrix = confusion_matrix(test_result["y_true"], test_result["y_pred"], num_classes)
    np.savetxt(os.path.join(out, "confusion_matrix.csv"), matrix, fmt="%d", delimiter=",")
    recall = per_class_recall(test_result["y_true"], test_result["y_pred"], num_classes)
    try:
        trainer.history.plot(os.path.join(out, "curves.png"))
        plotted = "curves.png"
    except ImportError as error:
        plotted = "no curves.png (%s)" % error
    summary = {"test_accuracy": test_result["accuracy"], "test_loss": test_result["loss"],
               "per_class_recall": [None if np.isnan(r) else float(r) for r in recall],
               "epochs": len(trainer.history), "wall_seconds": wall_time,
               "samples_per_second": samples / wall_time if wall_time else None}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print("\n%-22s %s" % ("test accuracy", "%.4f" % summary["test_accuracy"]))
    print("%-22s %s" % ("test loss", "%.4f" % summary["test_loss"]))
    print("%-22s %s" % ("epochs", summary["epochs"]))
    print("%-22s %.1f s" % ("wall time", wall_time))
    print("%-22s %.0f" % ("samples/s (training)", summary["samples_per_second"] or 0))
    print("per-class recall:")
    for label, value in enumerate(recall):
        print("  class %-3d %s" % (label, "   n/a" if np.isnan(value) else "%.3f" % value))
    print("wrote %s: model.safetensors, checkpoint.safetensors, history.json, history.csv, "
          "confusion_matrix.csv, summary.json, %s" % (out, plotted))


def _several_mpi_ranks():
    """True when an MPI launcher started this process among several ranks."""
    from fastdl.distributed import get_world_size, launched_by_mpi
    return launched_by_mpi() and get_world_size() > 1


def run_training(model_name, train_set, val_set, test_set, num_classes, input_shape, args):
    """Train, evaluate on the test set and write every output file to ``args.out``.

    Returns the exit status: 0, 3 (finished but never beat chance) or 130
    (interrupted); raises UsageError when training diverges or ``--resume`` fails.
    """
    import fastdl
    from fastdl import nn
    from fastdl.data import (ClassBalancedSampler, DataLoader, RandomCrop, RandomSampler,
                             class_weights)
    from fastdl.optim.lr_scheduler import CosineAnnealingLR
    from fastdl.train import EarlyStopping, ModelCheckpoint, Trainer, TrainingDiverged
    fastdl.manual_seed(args.seed)
    if args.threads:
        fastdl.set_num_threads(args.threads)
    model = _make_model(model_name, input_shape, num_classes)
    optimizer = _make_optimizer(args.optimizer, model.parameters(), args.lr)
    checkpoint = os.path.join(args.out, "checkpoint.safetensors")
    if args.resume:
        _check_resume(checkpoint, model_name, input_shape, num_classes, args)
    weight = None
    sampler = RandomSampler(len(train_set))
    if not args.distributed and _several_mpi_ranks():
        # Each rank would otherwise train alone on the whole set without a word.
        args.distributed = True
    if args.distributed:
        from fastdl.distributed import DistributedSampler, init
        if args.balance in ("oversample", "undersample"):
            raise UsageError("--balance %s cannot be combined with --distributed"
                             % args.balance)
        init()
        sampler = DistributedSampler(len(train_set), seed=args.seed)
    if args.balance == "weights":
        weight = class_weights(train_set.targets, num_classes)
    elif args.balance in ("oversample", "undersample"):
        sampler = ClassBalancedSampler(train_set.targets, args.balance)
    loss_fn = nn.FocalLoss(alpha=weight, gamma=2.0) if args.focal_loss else \
        nn.CrossEntropyLoss(weight=weight)
    height = input_shape[1]
    transform = RandomCrop(height, padding=max(1, height // 8)) if args.augment else None
    callbacks = [ModelCheckpoint(checkpoint)]
    # Keep the weights of the best validation epoch; stop early only when asked.
    callbacks.append(EarlyStopping("val_loss", patience=args.patience or args.epochs))
    trainer = Trainer(model, optimizer, loss_fn, callbacks=callbacks,
                      scheduler=CosineAnnealingLR(optimizer, args.epochs),
                      progress=False if args.quiet else None,
                      distributed=args.distributed)
    train_loader = DataLoader(train_set, args.batch_size, sampler=sampler, seed=args.seed,
                              transform=transform)
    began = time.perf_counter()
    try:
        trainer.fit(train_loader, DataLoader(val_set, 512), args.epochs,
                    resume=checkpoint if args.resume else None)
    except KeyboardInterrupt:
        # The checkpoint of the last finished epoch is already on disk (written
        # atomically); keeping it, rather than saving mid-epoch, makes --resume replay
        # the interrupted epoch exactly.
        if os.path.exists(checkpoint):
            print("\ninterrupted in epoch %d: %s holds the end of epoch %d; continue with "
                  "--resume" % (trainer.epoch, checkpoint, trainer.epoch - 1), file=sys.stderr)
        else:
            print("\ninterrupted in the first epoch: nothing to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except TrainingDiverged as error:
        raise UsageError("%s (try a smaller --lr)" % error) from None
    wall = time.perf_counter() - began
    samples = sum(len(train_loader.sampler) for _ in trainer.history.records)
    result = trainer.evaluate(DataLoader(test_set, 512))
    if trainer.group is None or trainer.group.rank == 0:
        _write_outputs(args.out, trainer, model, result, num_classes, wall, samples)
    warning = _chance_warning(trainer.history.records, train_set.targets, val_set.targets,
                              num_classes, loss_fn)
    if warning is not None:
        if trainer.group is None or trainer.group.rank == 0:
            print("fastdl: warning: %s" % warning, file=sys.stderr)
        return EXIT_CHANCE
    return EXIT_OK


def _common(parser, epochs, batch_size, lr, optimizer, out):
    parser.add_argument("--epochs", type=_int_at_least(1), default=epochs,
                        help="epochs to train in all (with --resume: including those done)")
    parser.add_argument("--batch-size", type=_int_at_least(1), default=batch_size,
                        help="images per optimizer step")
    parser.add_argument("--lr", type=_positive_float, default=lr,
                        help="learning rate (cosine-annealed to 0 over --epochs)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=optimizer,
                        help="momentum: SGD with Nesterov momentum 0.9")
    parser.add_argument("--threads", type=_int_at_least(0), default=0,
                        help="kernel threads; 0: all available CPUs")
    parser.add_argument("--out", default=out,
                        help="directory for the model, checkpoint, history and summary")
    parser.add_argument("--seed", type=_int_at_least(0), default=0,
                        help="seed for initialisation, the split and shuffling")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUT/checkpoint.safetensors (same model, "
                             "optimizer and data)")
    parser.add_argument("--focal-loss", action="store_true",
                        help="focal loss (gamma 2) instead of cross-entropy")
    parser.add_argument("--balance", choices=("none", "weights", "oversample", "undersample"),
                        default="none",
                        help="for imbalanced classes: class-weighted loss or resampling")
    parser.add_argument("--patience", type=_int_at_least(0), default=0,
                        help="stop after this many epochs without a better val loss (0: never)")
    parser.add_argument("--augment", action="store_true", help="random-crop augmentation")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--distributed", action="store_true",
                        help="data-parallel over MPI: mpiexec -n RANKS fastdl ... "
                             "--distributed (--batch-size is per rank); on by itself when an MPI "
                             "launcher started several ranks")


def _demo(args):
    from fastdl.data import load_digits
    digits = load_digits(seed=args.seed)
    print("fastdl demo: LeNet-5 on scikit-learn's handwritten digits (%d train, %d val, "
          "%d test images, 8x8)" % (len(digits.train), len(digits.val), len(digits.test)))
    return run_training("lenet5", digits.train, digits.val, digits.test, digits.num_classes,
                        digits.input_shape, args)


def _guess_layout(shape):
    """'nhwc' when ``x``'s shape (N, A, B, C) looks channels-last, else 'nchw'.

    Channels-last: the last axis is a usual channel count (1, 3 or 4: grey,
    RGB, RGBA), axis 1 is not, and both of the other axes are larger.
    """
    _, a, b, c = shape
    channel_counts = (1, 3, 4)
    return "nhwc" if c in channel_counts and a not in channel_counts and min(a, b) > c \
        else "nchw"


def _load_images(path, layout):
    """The ``.npz`` as a TensorDataset of (N, C, H, W) images, transposed from
    channels-last when ``layout`` says so (or, for 'auto', when it looks so)."""
    from fastdl.data import TensorDataset, load_npz
    try:
        dataset = load_npz(path)
    except ValueError as error:
        raise UsageError(str(error)) from None
    x, y = dataset.arrays
    if layout == "auto":
        layout = _guess_layout(x.shape)
        if layout == "nhwc":
            print("fastdl: note: %s: x of shape %s looks channels-last (N, H, W, C); "
                  "training on it transposed to (N, C, H, W) %s (--layout nchw keeps it as "
                  "given)" % (path, x.shape, (x.shape[0], x.shape[3]) + x.shape[1:3]),
                  file=sys.stderr)
    if layout == "nhwc":
        dataset = TensorDataset(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), y)
    return dataset


def _train(args):
    from fastdl.data import Subset, stratified_split
    if args.num_classes == 1:
        raise UsageError("--num-classes must be 0 (from the labels) or >= 2, got 1")
    dataset = _load_images(args.data, args.layout)
    if len(dataset) < 10:
        raise UsageError("%s: needs at least 10 images, got %d" % (args.data, len(dataset)))
    labels = dataset.targets
    present = np.unique(labels)
    if len(present) < 2:
        raise UsageError("%s: every label is %d: a classifier needs at least 2 classes"
                         % (args.data, present[0]))
    num_classes = int(labels.max()) + 1
    if args.num_classes:
        if labels.max() >= args.num_classes:
            raise UsageError("%s: label %d out of range for --num-classes %d"
                             % (args.data, labels.max(), args.num_classes))
        num_classes = args.num_classes
    # One output per class: a label of 10**9 would ask for a 10**9-wide last layer.
    if num_classes > len(dataset):
        raise UsageError("%s: %d classes (%s) for %d images: labels must be 0..K-1 with K "
                         "at most the number of images (renumber them)"
                         % (args.data, num_classes,
                            "--num-classes" if args.num_classes
                            else "largest label %d" % labels.max(), len(dataset)))
    parts = stratified_split(labels, (0.8, 0.1, 0.1), args.seed)
    if not all(len(p) for p in parts):
        raise UsageError("%s: too few images per class to split 80/10/10 into non-empty "
                         "train, validation and test sets (%d images, %d classes)"
                         % (args.data, len(dataset), len(present)))
    train_set, val_set, test_set = (Subset(dataset, p) for p in parts)
    return run_training(args.model, train_set, val_set, test_set, num_classes,
                        dataset.arrays[0].shape[1:], args)


def _info(args):
    import numba
    import fastdl
    from fastdl import runtime
    from threadpoolctl import threadpool_info
    print("fastdl %s" % fastdl.__version__)
    print("numpy %s, numba %s, threads %d (available CPUs %d)" % (
        np.__version__, numba.__version__, fastdl.get_num_threads(), runtime.available_cpus()))
    print("numba threading layer setting: %s" % os.environ.get("NUMBA_THREADING_LAYER"))
    print("numba cache: %s" % (runtime.cache_dir() if runtime.cache_enabled()
                               else "off (%s)" % runtime.cache_disabled_reason()))
    for library in threadpool_info():
        print("%s (%s): %s threads, %s" % (library.get("internal_api"), library.get("user_api"),
                                           library.get("num_threads"),
                                           os.path.basename(library.get("filepath", ""))))
    return 0


def _warmup(args):
    """Compile (or load from the cache) every kernel a plan needs, so serving starts warm."""
    import fastdl
    from fastdl import deploy, models
    began = time.perf_counter()
    if args.plans:
        for path in args.plans:
            try:
                deploy.open_model(path, warmup=True)
            except (OSError, ValueError) as error:
                raise UsageError("%s: %s" % (path, error))
    else:   # the model zoo's kernels: conv, pooling, linear, activations, and training
        for model, shape in ((models.lenet5(), (2, 1, 28, 28)),
                             (models.resnet8(width=4), (2, 3, 8, 8))):
            x = np.zeros(shape, np.float32)
            deploy.compile(model, x)
            model.train()
            fastdl.functional.cross_entropy(model(fastdl.Tensor(x)), np.zeros(2, np.int64)) \
                .backward()
    print("warm: kernels compiled or loaded from the cache in %.1f s"
          % (time.perf_counter() - began))
    return 0


def _bench(argv):
    from fastdl import bench
    return bench.main(argv)


def build_parser():
    parser = _Parser(prog="fastdl", description="Fast CPU deep learning.",
                     formatter_class=_HelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub = dict(formatter_class=_HelpFormatter, epilog=EXIT_STATUS_HELP)
    demo = commands.add_parser("demo", help="train LeNet-5 on the bundled digits",
                               description="Train LeNet-5 on scikit-learn's 8x8 digits.", **sub)
    _common(demo, epochs=60, batch_size=32, lr=3e-3, optimizer="adam", out="fastdl-demo")
    train = commands.add_parser(
        "train", help="train a model on an .npz file (x, y)",
        description="Train a classifier on an .npz file with images x and int labels y\n"
                    "(0..K-1), split 80/10/10 into train, validation and test sets.", **sub)
    train.add_argument("--data", required=True,
                       help=".npz with x (N, C, H, W) finite numbers and y (N,) int labels")
    train.add_argument("--layout", choices=LAYOUTS, default="auto",
                       help="x's axis order; auto: x is taken as channels-last (N, H, W, C), "
                            "and transposed with a note, when its last axis is 1, 3 or 4, "
                            "axis 1 is not, and H and W are larger")
    train.add_argument("--model", choices=MODELS, default="lenet5",
                       help="lenet5: square images >= 8x8; resnet8/20: images >= 4x4")
    train.add_argument("--num-classes", type=_int_at_least(0), default=0,
                       help="0: largest label + 1; at most the number of images")
    _common(train, epochs=10, batch_size=64, lr=1e-3, optimizer="adam", out="fastdl-run")
    commands.add_parser("info", help="versions, threads, BLAS and cache",
                        description="Versions, threads, BLAS and the Numba cache.",
                        formatter_class=_HelpFormatter)
    warm = commands.add_parser("warmup", help="compile every kernel ahead of serving",
                               description="Compile (or load from the cache) every kernel "
                                           "the model zoo\nor the given plans (or .onnx models) "
                                           "need.",
                               formatter_class=_HelpFormatter)
    warm.add_argument("plans", nargs="*",
                      help="plan files or .onnx models to load and run once (none: the model "
                           "zoo's kernels)")
    commands.add_parser("bench", help="fastdl vs PyTorch side by side (fastdl bench --help)",
                        add_help=False)
    return parser


def _run(args):
    if args.command in ("demo", "train"):
        _check_output_dir(args.out)
        return _demo(args) if args.command == "demo" else _train(args)
    if args.command == "warmup":
        return _warmup(args)
    return _info(args)


def main(argv=None):
    """Run the command; return its exit status (see the module docstring).

    Known failures (UsageError, OSError, MemoryError) become one line on
    stderr and status 2; anything else propagates with its traceback.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        try:
            return _bench(argv[1:])
        except SystemExit as done:   # its own --help, or argparse's error
            return done.code
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as done:   # --help
            return done.code
        return _run(args)
    except UsageError as error:
        message = str(error)
    except OSError as error:   # unreadable input, unwritable or full output
        message = _describe_os_error(error)
    except MemoryError as error:
        message = "out of memory (%s): try a smaller --batch-size or model" % (error or "")
    except KeyboardInterrupt:
        print("fastdl: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    print("fastdl: error: %s" % " ".join(message.split()), file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
