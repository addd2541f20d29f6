"""An offline demo catalog, drawn in code, so the first run needs no internet.

Each product is a picture of a coloured shape (a "poster"), with a title and
attributes that describe it. With a real CLIP model the text query
"red circle" finds the red circle; with any model, querying by a product's
own picture finds that product first.
"""

from __future__ import annotations

import math
from pathlib import Path

from clipsearch.catalog import Product, write_jsonl

COLORS = {
    "red": (220, 30, 40),
    "green": (40, 160, 60),
    "blue": (30, 70, 200),
    "yellow": (240, 210, 30),
    "black": (20, 20, 20),
    "orange": (245, 130, 20),
    "purple": (130, 50, 170),
    "pink": (240, 120, 180),
}
SHAPES = ("circle", "square", "triangle", "striped", "dotted")
CATEGORIES = {"circle": "poster", "square": "tile", "triangle": "poster",
              "striped": "rug", "dotted": "cushion"}


def _draw(color: tuple[int, int, int], shape: str, size: int = 224):
    from PIL import Image, ImageDraw

    background = (250, 250, 245) if sum(color) < 600 else (40, 40, 60)
    img = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(img)
    pad = size // 6
    if shape == "circle":
        draw.ellipse([pad, pad, size - pad, size - pad], fill=color)
    elif shape == "square":
        draw.rectangle([pad, pad, size - pad, size - pad], fill=color)
    elif shape == "triangle":
        draw.polygon([(size // 2, pad), (size - pad, size - pad), (pad, size - pad)], fill=color)
    elif shape == "striped":
        step = size // 8
        for x in range(0, size, 2 * step):
            draw.rectangle([x, 0, x + step - 1, size], fill=color)
    elif shape == "dotted":
        step = size // 5
        r = step // 3
        for i in range(5):
            for j in range(5):
                cx, cy = i * step + step // 2, j * step + step // 2
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
    return img


def demo_products(image_dir: Path) -> list[Product]:
    products = []
    for ci, color in enumerate(COLORS):
        for si, shape in enumerate(SHAPES):
            pid = f"demo-{color}-{shape}"
            image_path = image_dir / f"{pid}.png"
            # A second photo per product (a close-up), so `clipsearch eval --generate
            # image2product` has a non-main image to query with.
            closeup_path = image_dir / f"{pid}-closeup.png"
            price = round(9.5 + 7.25 * ci + 3.5 * si + math.sin(ci * 5 + si) * 2, 2)
            title = f"{color.capitalize()} {shape} {CATEGORIES[shape]}"
            products.append(Product(
                id=pid,
                title=title,
                images=(str(image_path.resolve()), str(closeup_path.resolve())),
                attributes={"color": color, "pattern": shape,
                            "category": CATEGORIES[shape], "price": price},
            ))
    return products


def write_demo_catalog(directory: Path) -> Path:
    """Draw the images and write catalog.jsonl; returns the catalog path. Idempotent."""
    image_dir = directory / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    products = demo_products(image_dir)
    for product in products:
        main, closeup = (Path(i) for i in product.images)
        if not (main.exists() and closeup.exists()):
            color, shape = product.attributes["color"], product.attributes["pattern"]
            image = _draw(COLORS[str(color)], str(shape))
            image.save(main)
            image.crop((28, 28, 196, 196)).resize(image.size).save(closeup)
    catalog = directory / "catalog.jsonl"
    write_jsonl(products, catalog, base_dir=directory)
    return catalog
