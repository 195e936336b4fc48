"""Train the bundled `shapes-det` detector with AutoTimm's own FCOS code.

The detector is AutoTimm 0.7.37's `ObjectDetector(detection_arch="fcos")` on timm's
`test_resnet` backbone (FPN 64 channels, 2 convolutions per tower, 4 classes), the
architecture Lumen calls `fcos_test_resnet`. Training it with AutoTimm (its target
assignment, focal / IoU / centerness losses, AdamW and cosine schedule, under
Lightning's Trainer) keeps the bundled model the kind of checkpoint our users bring,
and the loss the reference one.

The scenes come from Rust's seeded generator (`lumen_models::shapes::shape_scene`),
written by the `shape_scenes` example; this script makes them when `--data` is empty.

    python tools/train/shapes_det.py [--epochs 5] [--train 6000] [--seed 0] \
        [--data DIR] [--out crates/lumen-models/weights/shapes-det.safetensors]

Splits: train (seed 1) fits the weights; validation (seed 2, 256 scenes) picks the
epoch by mAP@0.5; test (seed 4, 512 scenes) is only measured, after the pick.
mAP@0.5 here is COCO's 101-point interpolated AP at IoU >= 0.5, averaged over the
classes, the same definition as `lumen_metrics::detection::mean_average_precision`.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from safetensors.torch import save_file

from autotimm.tasks.object_detection import ObjectDetector
from autotimm.core.backbone import FeatureBackboneConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_CLASSES = 4


def make_split(data, split, count):
    folder = os.path.join(data, split)
    annotations = os.path.join(folder, "annotations.json")
    if os.path.exists(annotations):
        with open(annotations) as f:
            if len(json.load(f)["scenes"]) == count:
                return folder
    subprocess.run(
        ["cargo", "run", "--release", "-q", "-p", "lumen-examples", "--example", "shape_scenes",
         "--", folder, split, str(count)],
        cwd=REPO, check=True,
    )
    return folder


def load_split(folder):
    """Images normalized as Lumen's shapes models expect ((x / 255 - 0.5) / 0.5)."""
    with open(os.path.join(folder, "annotations.json")) as f:
        scenes = json.load(f)["scenes"]
    images = np.stack([np.asarray(Image.open(os.path.join(folder, s["file"])).convert("RGB"))
                       for s in scenes])
    images = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).sub(0.5).div(0.5)
    boxes = [torch.tensor([o["box"] for o in s["objects"]], dtype=torch.float32).reshape(-1, 4)
             for s in scenes]
    labels = [torch.tensor([o["label"] for o in s["objects"]], dtype=torch.int64) for s in scenes]
    return images, boxes, labels


class Scenes(torch.utils.data.Dataset):
    def __init__(self, split):
        self.images, self.boxes, self.labels = split

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.boxes[i], self.labels[i]


def collate(items):
    images, boxes, labels = zip(*items)
    return {"image": torch.stack(images), "boxes": list(boxes), "labels": list(labels)}


def box_iou(a, b):
    """IoU of every box of `a` [N, 4] with every box of `b` [M, 4] (x1, y1, x2, y2)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: np.clip(x[:, 2:] - x[:, :2], 0, None).prod(-1)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def mean_average_precision(detections, truths, num_classes, iou_threshold=0.5):
    """COCO-style AP at one IoU threshold: per class, detections of all images in score
    order, each matched greedily to the unmatched ground-truth box of highest IoU
    (>= threshold); precision made monotone and sampled at 101 recall points; the mean
    over classes that have ground truth."""
    aps = []
    for c in range(num_classes):
        scored = []  # (score, image, box)
        gt = {}
        for i, (det, (boxes, labels)) in enumerate(zip(detections, truths)):
            gt[i] = boxes[labels == c]
            for box, score, label in zip(det["boxes"], det["scores"], det["labels"]):
                if label == c:
                    scored.append((score, i, box))
        total = sum(len(g) for g in gt.values())
        if total == 0:
            continue
        scored.sort(key=lambda s: -s[0])
        used = {i: np.zeros(len(g), bool) for i, g in gt.items()}
        tp = np.zeros(len(scored))
        for k, (_, i, box) in enumerate(scored):
            if len(gt[i]) == 0:
                continue
            ious = box_iou(box[None], gt[i])[0]
            ious[used[i]] = -1
            j = int(np.argmax(ious))
            if ious[j] >= iou_threshold:
                used[i][j] = True
                tp[k] = 1
        cum_tp = np.cumsum(tp)
        recall = cum_tp / total
        precision = cum_tp / np.arange(1, len(scored) + 1)
        precision = np.maximum.accumulate(precision[::-1])[::-1] if len(scored) else precision
        ap = 0.0
        for r in np.linspace(0, 1, 101):
            k = np.searchsorted(recall, r, side="left")
            ap += precision[k] if k < len(precision) else 0.0
        aps.append(ap / 101)
    return float(np.mean(aps))


def evaluate(model, split, batch=64):
    images, boxes, labels = split
    model.eval()
    detections = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            for d in model.predict(images[start:start + batch]):
                detections.append({k: v.numpy() for k, v in d.items()})
    model.train()
    truths = [(b.numpy(), l.numpy()) for b, l in zip(boxes, labels)]
    return mean_average_precision(detections, truths, NUM_CLASSES)


class PickOnValidation(pl.Callback):
    """After each epoch: mAP@0.5 on the validation split; the best epoch's Lightning
    checkpoint is kept."""

    def __init__(self, validation, path):
        self.validation, self.path, self.best, self.history = validation, path, -1.0, []

    def on_train_epoch_end(self, trainer, model):
        m = evaluate(model, self.validation)
        self.history.append(m)
        loss = trainer.callback_metrics.get("train/loss")
        print(f"epoch {trainer.current_epoch + 1}: validation mAP@0.5 {m:.4f}"
              f" (last loss {float(loss) if loss is not None else float('nan'):.3f})", flush=True)
        if m > self.best:
            self.best = m
            trainer.save_checkpoint(self.path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train", type=int, default=6000, help="training scenes")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0, help="weights and shuffling")
    parser.add_argument("--data", default="/tmp/lumen-shape-scenes")
    parser.add_argument("--out", default=os.path.join(REPO, "crates/lumen-models/weights/shapes-det.safetensors"))
    parser.add_argument("--ckpt", default=None, help="where to keep the picked Lightning checkpoint")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    if args.epochs < 1 or args.train < 1 or args.batch < 1 or args.threads < 1 or not args.lr > 0:
        sys.exit("--epochs, --train, --batch and --threads must be positive and --lr above 0")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.access(out_dir, os.W_OK):
        sys.exit(f"--out {args.out}: cannot write in {out_dir}")
    torch.set_num_threads(args.threads)
    ckpt = args.ckpt or os.path.join(args.data, "shapes-det.ckpt")

    train = load_split(make_split(args.data, "train", args.train))
    validation = load_split(make_split(args.data, "validation", 256))
    test = load_split(make_split(args.data, "test", 512))

    model = ObjectDetector(
        backbone=FeatureBackboneConfig(model_name="test_resnet", pretrained=False),
        num_classes=NUM_CLASSES, detection_arch="fcos", fpn_channels=64, head_num_convs=2,
        lr=args.lr, weight_decay=1e-4, optimizer="adamw", scheduler="cosine",
        metrics=[], compile_model=False, seed=args.seed, deterministic=True,
    )
    loader = torch.utils.data.DataLoader(
        Scenes(train), batch_size=args.batch, shuffle=True, collate_fn=collate,
        generator=torch.Generator().manual_seed(args.seed), drop_last=True,
    )
    pick = PickOnValidation(validation, ckpt)
    trainer = pl.Trainer(
        max_epochs=args.epochs, accelerator="cpu", deterministic=True, logger=False,
        enable_checkpointing=False, enable_model_summary=False, callbacks=[pick],
        limit_val_batches=0, gradient_clip_val=10.0,
    )
    started = time.time()
    trainer.fit(model, loader)
    print(f"trained {args.epochs} epochs in {time.time() - started:.0f} s")

    best = torch.load(ckpt, weights_only=False)
    model.load_state_dict(best["state_dict"])
    epoch = int(np.argmax(pick.history)) + 1
    test_map = evaluate(model, test)
    print(f"picked epoch {epoch} (validation mAP@0.5 {pick.best:.4f}); test mAP@0.5 {test_map:.4f}")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    partial = args.out + ".partial"  # then renamed: an interrupted run leaves no half file
    save_file(state, partial, metadata={
        "architecture": "fcos_test_resnet", "classes": "circle,square,triangle,cross",
        "trained_by": "tools/train/shapes_det.py (AutoTimm 0.7.37 ObjectDetector, fcos)",
        "seed": str(args.seed), "epochs": str(args.epochs), "picked_epoch": str(epoch),
        "validation_map50": f"{pick.best:.4f}", "test_map50": f"{test_map:.4f}",
    })
    os.replace(partial, args.out)
    print(f"wrote {args.out}; Lightning checkpoint {ckpt}")


if __name__ == "__main__":
    main()
