"""Split a folder of class subfolders into train/ and test/ folders for `protect bench`.

    python benchmarks/split.py PATH/clothing-photos DIR --test-share 0.2 --seed 0

Each class is shuffled with the seed and its last `test-share` (at least one
image) goes to DIR/test/<class>/, the rest to DIR/train/<class>/. Files are
copied, never moved, so the source folder is left as it is.
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path

from protect import files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="folder with one subfolder per class")
    parser.add_argument("target", type=Path, help="folder to create train/ and test/ in")
    parser.add_argument("--test-share", type=float, default=0.2, help="share of each class held out for testing")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not 0 < args.test_share < 1:
        raise SystemExit(f"--test-share {args.test_share}: use a share between 0 and 1, such as 0.2")
    for part in ("train", "test"):
        if (args.target / part).exists():
            raise SystemExit(f"{args.target / part} already exists; choose an empty target folder")

    by_class: dict[str, list[files.ImageFile]] = {}
    for image in files.discover(args.source).images:
        if image.label:
            by_class.setdefault(image.label, []).append(image)
    for label, images in sorted(by_class.items()):
        images.sort(key=lambda i: str(i.relative))
        random.Random(f"{args.seed}:{label}").shuffle(images)
        test_count = max(1, round(len(images) * args.test_share))
        for part, chosen in (("train", images[:-test_count]), ("test", images[-test_count:])):
            for image in chosen:
                destination = args.target / part / image.relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(image.path, destination)
        print(f"{label}: {len(images) - test_count} train, {test_count} test")


if __name__ == "__main__":
    main()
