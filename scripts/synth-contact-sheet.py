"""Contact sheet of the photo-train synthetic style for docs/images/: watermarked | alpha per item.

    .venv/bin/python scripts/synth-contact-sheet.py [--styles photo-train] [--count 24] [--out docs/images/synth-photo-train.png]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from clearmark.data.synth import generate_synthetic

TILE, COLUMNS, CAPTION = 160, 6, 12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--styles", default="photo-train")
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("docs/images/synth-photo-train.png"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        summary = generate_synthetic(root, args.count, args.seed, size=384, styles=args.styles, progress=False)
        rows = -(-args.count // COLUMNS)
        sheet = Image.new("RGB", (COLUMNS * 2 * TILE, rows * (TILE + CAPTION)), "white")
        draw = ImageDraw.Draw(sheet)
        for index, item in enumerate(summary.items):
            x, y = (index % COLUMNS) * 2 * TILE, (index // COLUMNS) * (TILE + CAPTION)
            watermarked = Image.open(root / "watermarked" / item.name).convert("RGB")
            alpha = np.asarray(Image.open(root / "alpha" / item.name), np.float32) / 257
            sheet.paste(watermarked.resize((TILE, TILE), Image.Resampling.LANCZOS), (x, y))
            sheet.paste(Image.fromarray(alpha.astype(np.uint8)).convert("RGB").resize((TILE, TILE), Image.Resampling.LANCZOS), (x + TILE, y))
            draw.text((x + 2, y + TILE), f"{item.watermark}, opacity {item.opacity:.2f}, {item.background}", fill="black")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # 256 colours keep the sheet small enough for the repository; it is for looking at, not measuring.
    sheet.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(args.out, optimize=True)
    print(f"{args.out}: {args.out.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
