"""Turn a run's weights into weights shipped inside the package, with their measured accuracy.

    python scripts/ship_weights.py RUN/best.safetensors --name resnet14.fashion_mnist \\
        --data fashion-mnist --recipe "default, 7 epochs, seed 0" \\
        --source benchmarks/results/time_to_accuracy-default-shipped.json

Evaluates the weights in fp32 on the test split of ``--data`` (with the test-time views their
training used), writes src/resnetlab/weights/shipped/<arch>_<tag>.safetensors with that accuracy
in its metadata, and prints the line for SHIPPED_FILES in src/resnetlab/weights/registry.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

from resnetlab.fileio import atomic_write
from resnetlab.inference import evaluate_checkpoint
from resnetlab.weights import read_checkpoint

SHIPPED = Path(__file__).parents[1] / "src" / "resnetlab" / "weights" / "shipped"
DATASET_NAMES = {"fashion-mnist": "Fashion-MNIST test (10,000 images)", "mnist": "MNIST test (10,000 images)"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", help="a resnetlab .safetensors file (a run's best or last)")
    parser.add_argument("--name", required=True, help="arch.tag, e.g. resnet14.fashion_mnist")
    parser.add_argument("--data", required=True, help="the dataset whose test split measures it")
    parser.add_argument("--recipe", required=True, help="how it was trained, in words")
    parser.add_argument("--source", required=True, help="the results JSON of the training run")
    args = parser.parse_args()
    arch, tag = args.name.split(".", 1)
    _, metadata = read_checkpoint(args.weights)
    if metadata.get("arch") != arch:
        parser.error(f"{args.weights} holds a {metadata.get('arch')}, not a {arch}")
    result = evaluate_checkpoint(args.weights, args.data, device="cpu", precision="fp32")
    accuracy = dict(top1=round(result["test_top1"], 2), top5=round(result["test_top5"], 2),
                    dataset=DATASET_NAMES.get(args.data, f"{args.data} test"), kind="measured",
                    precision="fp32", flip_tta=result["flip_tta"], shift_tta=result["shift_tta"],
                    recipe=args.recipe, source=args.source)
    tensors = load_file(args.weights)
    with open(args.weights, "rb") as handle:  # the metadata is kept as it is and the accuracy added
        header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
    stored = dict(header.get("__metadata__", {}), accuracy=json.dumps(accuracy, sort_keys=True))
    target = SHIPPED / f"{arch}_{tag}.safetensors"
    atomic_write(target, lambda tmp: save_file(tensors, str(tmp), metadata=stored))
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    print(f"{args.name}: {accuracy['top1']:.2f}% top-1 on {accuracy['dataset']}, {target.stat().st_size:,} bytes")
    print(f'    "{args.name}": ("{target.name}", "{digest}", DEFAULT),')
    return 0


if __name__ == "__main__":
    sys.exit(main())
