"""Training on CUDA, unchanged: time one LSTM epoch of atf's SupervisedTrainer on CPU and on CUDA.

The same trainer code runs on both devices (TrainParams(device=...)); the data are seeded synthetic
regime-switching bars, so the script needs no data package and runs on a bare GPU machine.

    python benchmarks/bench_cuda_epoch.py [--bars 20000] [--epochs 4] [--hidden 128] [--window 32]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from atf.features import direction_labels, make_features
from atf.synthetic import synthetic_ohlcv
from atf.trainers.supervised import SupervisedTrainer


def epoch_seconds(device: str, F, y, train_idx, val_idx, a) -> tuple[float, float, str]:
    "Mean seconds per epoch after the first (warm-up) epoch, the final validation loss, and the device used."
    times = []
    last = [time.perf_counter()]
    def tick(epoch, row):
        if device == "cuda": torch.cuda.synchronize()
        now = time.perf_counter(); times.append(now - last[0]); last[0] = now
    t = SupervisedTrainer("lstm", {"hidden": a.hidden, "layers": 2, "dropout": 0.1}, a.window,
                          {"max_epochs": a.epochs, "patience": a.epochs, "batch_size": a.batch, "device": device})
    res = t.train(F, y, train_idx, val_idx, callback=tick)
    return float(np.mean(times[1:])), float(res.history["val_loss"].iloc[-1]), res.device


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bars", type=int, default=20_000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--batch", type=int, default=256)
    a = ap.parse_args()
    df = synthetic_ohlcv(a.bars, seed=0)
    F, y = make_features(df), direction_labels(df["close"], 1)
    cut = int(a.bars * 0.8)
    train_idx, val_idx = np.arange(cut), np.arange(cut + 1, a.bars)
    print(f"LSTM 2x{a.hidden}, window {a.window}, batch {a.batch}, {cut:,} training windows, torch {torch.__version__}")
    cpu, vl_cpu, _ = epoch_seconds("cpu", F, y, train_idx, val_idx, a)
    print(f"  cpu  ({torch.get_num_threads()} threads): {cpu:8.3f} s/epoch   val loss {vl_cpu:.4f}")
    if torch.cuda.is_available():
        gpu, vl_gpu, dev = epoch_seconds("cuda", F, y, train_idx, val_idx, a)
        print(f"  {dev} ({torch.cuda.get_device_name(0)}): {gpu:8.3f} s/epoch   val loss {vl_gpu:.4f}")
        print(f"  cuda speed-up: {cpu / gpu:.1f}x")
        auto = SupervisedTrainer("mlp", {}, 1, {"max_epochs": 1})
        auto.train(F, y, train_idx, val_idx)
        print(f"  device='auto' trained on: {next(auto.model.parameters()).device}")
    else:
        print("  no CUDA device visible: GPU timing skipped")


if __name__ == "__main__":
    main()
