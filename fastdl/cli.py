"""The ``fastdl`` command: demo, train, bench, info, warmup.

Errors in what the user gave (a bad file, an unwritable directory, a wrong
option) print one line on stderr and exit with status 2, before anything is
written.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

MODELS = ("lenet5", "resnet8", "resnet20")
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad")


class UsageError(Exception):
    """A problem with the user's input: reported in one line, exit status 2."""


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


def _make_model(name, input_shape, num_classes):
    from fastdl import models
    channels, height, width = input_shape
    if name == "lenet5":
        if height != width:
            raise UsageError("lenet5 needs square images, got %dx%d" % (height, width))
        return models.lenet5(num_classes, channels, input_size=height)
    return getattr(models, name)(num_classes=num_classes, in_channels=channels)


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


def run_training(model_name, train_set, val_set, test_set, num_classes, input_shape, args):
    """Train, evaluate on the test set and write every output file to ``args.out``."""
    import fastdl
    from fastdl import nn
    from fastdl.data import (ClassBalancedSampler, DataLoader, RandomCrop, RandomSampler,
                             class_weights)
    from fastdl.optim.lr_scheduler import CosineAnnealingLR
    from fastdl.train import EarlyStopping, ModelCheckpoint, Trainer
    fastdl.manual_seed(args.seed)
    if args.threads:
        fastdl.set_num_threads(args.threads)
    model = _make_model(model_name, input_shape, num_classes)
    optimizer = _make_optimizer(args.optimizer, model.parameters(), args.lr)
    weight = None
    sampler = RandomSampler(len(train_set))
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
    checkpoint = os.path.join(args.out, "checkpoint.safetensors")
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
        return 130
    wall = time.perf_counter() - began
    samples = sum(len(train_loader.sampler) for _ in trainer.history.records)
    result = trainer.evaluate(DataLoader(test_set, 512))
    if trainer.group is None or trainer.group.rank == 0:
        _write_outputs(args.out, trainer, model, result, num_classes, wall, samples)
    return 0


def _common(parser, epochs, batch_size, lr, optimizer, out):
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=optimizer)
    parser.add_argument("--threads", type=int, default=0, help="0: all available CPUs")
    parser.add_argument("--out", default=out)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUT/checkpoint.safetensors")
    parser.add_argument("--focal-loss", action="store_true")
    parser.add_argument("--balance", choices=("none", "weights", "oversample", "undersample"),
                        default="none")
    parser.add_argument("--patience", type=int, default=0,
                        help="stop after this many epochs without a better val loss (0: never)")
    parser.add_argument("--augment", action="store_true", help="random-crop augmentation")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--distributed", action="store_true",
                        help="data-parallel over MPI: mpiexec -n RANKS fastdl ... "
                             "--distributed (--batch-size is per rank)")


def _demo(args):
    from fastdl.data import load_digits
    digits = load_digits(seed=args.seed)
    print("fastdl demo: LeNet-5 on scikit-learn's handwritten digits (%d train, %d val, "
          "%d test images, 8x8)" % (len(digits.train), len(digits.val), len(digits.test)))
    return run_training("lenet5", digits.train, digits.val, digits.test, digits.num_classes,
                        digits.input_shape, args)


def _train(args):
    from fastdl.data import load_npz, stratified_split, Subset
    try:
        dataset = load_npz(args.data)
    except ValueError as error:
        raise UsageError(str(error))
    if len(dataset) < 10:
        raise UsageError("%s: needs at least 10 images, got %d" % (args.data, len(dataset)))
    labels = dataset.targets
    num_classes = int(labels.max()) + 1
    if args.num_classes:
        if labels.max() >= args.num_classes:
            raise UsageError("%s: label %d out of range for --num-classes %d"
                             % (args.data, labels.max(), args.num_classes))
        num_classes = args.num_classes
    parts = stratified_split(labels, (0.8, 0.1, 0.1), args.seed)
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
                deploy.load(path, warmup=True)
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
    parser = argparse.ArgumentParser(prog="fastdl", description="Fast CPU deep learning.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="train LeNet-5 on the bundled digits")
    _common(demo, epochs=60, batch_size=32, lr=3e-3, optimizer="adam", out="fastdl-demo")
    train = commands.add_parser("train", help="train a model on an .npz file (x, y)")
    train.add_argument("--data", required=True, help=".npz with x (N,C,H,W) and y (N,)")
    train.add_argument("--model", choices=MODELS, default="lenet5")
    train.add_argument("--num-classes", type=int, default=0)
    _common(train, epochs=10, batch_size=64, lr=1e-3, optimizer="adam", out="fastdl-run")
    commands.add_parser("info", help="versions, threads, BLAS and cache")
    warm = commands.add_parser("warmup", help="compile every kernel ahead of serving")
    warm.add_argument("plans", nargs="*", help="plan files to load and run once")
    commands.add_parser("bench", help="fastdl vs PyTorch side by side", add_help=False)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command in ("demo", "train"):
            for name in ("epochs", "batch_size"):
                if getattr(args, name) < 1:
                    raise UsageError("--%s must be >= 1" % name.replace("_", "-"))
            if args.lr <= 0:
                raise UsageError("--lr must be > 0")
            _check_output_dir(args.out)
            return _demo(args) if args.command == "demo" else _train(args)
        if args.command == "warmup":
            return _warmup(args)
        return _info(args)
    except UsageError as error:
        print("fastdl: error: %s" % error, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
