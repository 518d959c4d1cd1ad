"""A tiny synthetic detection dataset: coloured rectangles on a noisy background."""

import numpy as np

COLOURS = np.array([[220, 40, 40], [40, 60, 220]], "uint8")  # class 0 red, class 1 blue


def rectangles(count: int, size: int = 128, seed: int = 0, max_objects: int = 2
               ) -> tuple[list[np.ndarray], list[dict[str, np.ndarray]]]:
    """`count` images (`size` x `size`, slightly varied sizes) and their annotations
    `{"boxes": (n, 4) xyxy pixels, "classes": (n,)}`."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for _ in range(count):
        h, w = size, size + int(rng.integers(-16, 17))
        image = rng.integers(100, 140, (h, w, 3)).astype("uint8")
        boxes, classes = [], []
        for _ in range(int(rng.integers(1, max_objects + 1))):
            bw, bh = rng.integers(size // 5, size // 2, 2)
            x1, y1 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            cls = int(rng.integers(0, 2))
            image[y1:y1 + bh, x1:x1 + bw] = COLOURS[cls]
            boxes.append([x1, y1, x1 + bw, y1 + bh])
            classes.append(cls)
        images.append(image)
        annotations.append({"boxes": np.array(boxes, "float32"),
                            "classes": np.array(classes, "int64")})
    return images, annotations
