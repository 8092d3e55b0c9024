"""``python -m bench.data.synthetic OUT.png``: a contact sheet of synthetic scenes."""

from __future__ import annotations

from bench.data.synthetic.config import SyntheticConfig
from bench.data.synthetic.render import contact_sheet


def main() -> None:
    """Write a contact sheet of synthetic scenes to a PNG file."""
    import argparse

    from PIL import Image

    parser = argparse.ArgumentParser(description="Write a contact sheet of synthetic scenes.")
    parser.add_argument("out", help="PNG path")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    sheet = contact_sheet(args.n, args.seed, SyntheticConfig(size=args.size))
    Image.fromarray(sheet).save(args.out)


if __name__ == "__main__":
    main()
