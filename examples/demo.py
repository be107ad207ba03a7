"""A small training loop that writes a real experiment to ./test_tube_logs.

Run:  python examples/demo.py
"""

from __future__ import annotations

import math

import numpy as np

from test_tube import Experiment


def main() -> None:
    rng = np.random.default_rng(0)
    for lr in (0.1, 0.03):
        with Experiment(name="demo", description=f"toy regression, lr={lr}") as exp:
            exp.tag({"learning_rate": lr, "optimizer": "sgd", "batch_size": 32})
            w = 0.0
            for step in range(2000):
                x = rng.normal(size=32)
                y = 3.0 * x + rng.normal(scale=0.1, size=32)
                grad = float(np.mean(2 * (w * x - y) * x))
                w -= lr * grad
                loss = float(np.mean((w * x - y) ** 2))
                exp.log({"train_loss": loss, "w": w, "epoch": step // 500})
                if step % 500 == 0:
                    exp.log({"val_loss": loss * 1.1, "val_acc": 1 - math.exp(-step / 400)})
            # an image: any key containing png/jpg/jpeg
            image = (np.outer(np.linspace(0, 1, 64), np.linspace(1, 0, 64)) * 255).astype(np.uint8)
            exp.log({"weights_png": image})
        print(f"wrote {exp.log_dir}")


if __name__ == "__main__":
    main()
