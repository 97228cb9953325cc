"""DVC `fetch` stage: download (if needed) and prepare one dataset into a compact artefact.

    $ python -m pipelines.fetch digits                        # offline: scikit-learn's 8x8 digits
    $ python -m pipelines.fetch mnist --root data/raw --out data/prepared
    $ python -m pipelines.fetch image_folder --source photos/ --size 64

Writes `<out>/<dataset>/{data.npz,meta.json}`; a second run on a finished artefact does nothing.
"""

from __future__ import annotations

import argparse
import logging
import sys

from gon.app.data.datasets import DATASETS, DatasetError, prepare


def main(argv: list[str] | None = None) -> int:
    """Parse argv, prepare the dataset; return 0, 1 (data problem) or 2 (bad arguments)."""
    parser = argparse.ArgumentParser(
        prog="gon-fetch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", help=f"one of: {', '.join(DATASETS)}")
    parser.add_argument("--root", default="data/raw", help="raw files, torchvision layout")
    parser.add_argument("--out", default="data/prepared", help="prepared artefacts")
    parser.add_argument(
        "--source",
        default=None,
        help="image_folder only: folder of PNG/JPEG files (default <root>/image_folder)",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help="image_folder only: square side in pixels (default 64)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        prepare(args.dataset, args.root, args.out, source=args.source, size=args.size)
    except ValueError as exc:  # unknown name or misused option
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DatasetError as exc:  # missing / undownloadable / corrupt raw data
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0



def cli() -> None:
    """Console script `gon-fetch`."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
