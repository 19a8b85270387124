"""PGD-10 adversarial training throughput: the runner's step vs a reference-style loop, side by side.

(a) the runner: ``bench.train.train`` on data held as one tensor on the device, batched augmentation, the attack
    taking input gradients only, losses accumulated on the device;
(b) a loop written as the authors' script does it: a DataLoader over PIL images with per-sample torchvision
    transforms, fp32, batch 128, and a PGD whose every step calls ``loss.backward()`` (so it also computes the
    parameter gradients it does not need).

Both train the same model on the same data shape for the same number of images; each is warmed up first.

    python benchmarks/bench_train_speed.py [--cases digits,resnet18] [--batches 3] [--json out.json]

Prints the machine, versions, images/s of each and the ratio, and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import methods
from bench.data import PreparedData
from bench.models import build_model
from bench.suite import BUILTIN_DEFAULTS
from bench.train import train

CASES = {
    # name: (model, input shape, classes, augmentation, eps, alpha)
    "digits": ("cnn-small", (1, 8, 8), 10, "none", 0.1, 0.025),
    "resnet18": ("resnet18", (3, 32, 32), 10, "crop-flip", 8 / 255, 2 / 255),
}
BATCH = 128
STEPS = 10


def synthetic(shape: tuple[int, ...], classes: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, size=(n, *shape), dtype=np.uint8), rng.integers(0, classes, size=n))


def runner_images_per_second(case: str, n: int) -> float:
    model, shape, classes, augment, eps, alpha = CASES[case]
    x, y = synthetic(shape, classes, n)
    data = PreparedData(
        train_x=torch.as_tensor(x, dtype=torch.float32) / 255, train_y=torch.as_tensor(y),
        test_x=torch.zeros(1, *shape), test_y=torch.zeros(1, dtype=torch.int64),
        class_names=[str(c) for c in range(classes)], train_counts=np.bincount(y, minlength=classes).tolist(),
        subset_hash="bench", bounds=(0.0, 1.0),
    )
    config = {**BUILTIN_DEFAULTS, "model": model, "epochs": 2, "batch_size": BATCH, "milestones": [],
              "warmup_epochs": 0, "augment": augment, "seed": 0,
              "train_attack": {"kind": "pgd", "eps": eps, "alpha": alpha, "steps": STEPS, "random_start": True,
                               "bn_mode": "train"}}
    method = methods.get("ce").for_run(epochs=2, milestones=[])
    with tempfile.TemporaryDirectory() as tmp:
        outcome = train(config, method, data, Path(tmp))
    second = outcome.curves[1]  # epoch 0 is the warm-up
    return n / second["seconds"]


def reference_images_per_second(case: str, n: int) -> float:
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    model_name, shape, classes, augment, eps, alpha = CASES[case]
    x, y = synthetic(shape, classes, n)
    steps = [transforms.RandomCrop(shape[1], padding=4), transforms.RandomHorizontalFlip()] if augment != "none" else []
    transform = transforms.Compose([*steps, transforms.ToTensor()])

    class Images(Dataset):
        def __len__(self) -> int:
            return n

        def __getitem__(self, i: int):
            img = Image.fromarray(x[i].transpose(1, 2, 0).squeeze(-1) if shape[0] == 1 else x[i].transpose(1, 2, 0))
            return transform(img), int(y[i])

    loader = DataLoader(Images(), batch_size=BATCH, shuffle=True, num_workers=0)
    torch.manual_seed(0)
    model = build_model(model_name, classes, shape)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

    def epoch() -> float:
        start = time.perf_counter()
        model.train()
        for xb, yb in loader:
            x_adv = (xb + torch.empty_like(xb).uniform_(-eps, eps)).clamp(0, 1)
            for _ in range(STEPS):
                x_adv.requires_grad_(True)
                loss = F.cross_entropy(model(x_adv), yb)
                model.zero_grad()
                loss.backward()  # as the reference: parameter gradients too
                x_adv = torch.min(torch.max(x_adv.detach() + alpha * x_adv.grad.sign(), xb - eps), xb + eps).clamp(0, 1)
            loss = F.cross_entropy(model(x_adv), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()  # the reference logs the loss every batch: a host sync
        return time.perf_counter() - start

    epoch()  # warm-up
    return n / epoch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="digits,resnet18")
    parser.add_argument("--batches", type=int, default=3, help="batches of 128 per timed epoch")
    parser.add_argument("--json", default=str(Path(__file__).with_suffix(".json")))
    args = parser.parse_args()
    n = args.batches * BATCH
    results = {
        "machine": f"{platform.machine()} {platform.processor()}, {os.cpu_count()} cores, "
                   f"{torch.get_num_threads()} torch threads, device cpu",
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "images_per_epoch": n, "cases": {},
    }
    print(results["machine"], results["versions"])
    for case in args.cases.split(","):
        ours = runner_images_per_second(case, n)
        reference = reference_images_per_second(case, n)
        results["cases"][case] = {"runner_images_per_s": round(ours, 1), "reference_images_per_s": round(reference, 1),
                                  "ratio": round(ours / reference, 2)}
        print(f"{case}: runner {ours:.1f} images/s, reference-style loop {reference:.1f} images/s, "
              f"ratio {ours / reference:.2f}x (PGD-{STEPS} training, batch {BATCH}, {n} images)")
    Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
