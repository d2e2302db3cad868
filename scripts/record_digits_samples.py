#!/usr/bin/env python3
"""Writes plugins/digits/samples/: sample requests for the digits plugin with their expected
tensors, the backend outputs recorded from the real model, and the expected responses.

Every expected value is computed here, independently of the plugin:
  - pre.json: Pillow decodes the body, converts to grayscale ("L") and divides by 255 (the
    images are already 28x28, so no resampling is involved) -- the preprocessing the model was
    trained with (scripts/train_digits.py);
  - outputs.json: the SavedModel in models/digits (the highest version, as TF Serving serves
    it) run by TensorFlow on those pixels;
  - response.json: the top-k of those probabilities, written as the plugin documents it
    (scores are the f32 values widened to f64).
`infergate check --model plugins/digits` then compares the plugin against them.

Run with the e2e venv: ~/.cache/infergate/venv/bin/python scripts/record_digits_samples.py
"""

import json
import os
import shutil

import numpy as np
import tensorflow as tf
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "plugins", "digits", "samples")
MODEL = os.path.join(ROOT, "models", "digits")
LABELS = [str(d) for d in range(10)]

# (case, image, query, k)
CASES = [
    ("seven", "digit-7-0.png", "", 3),
    ("two-k1", "digit-2-0.png", "k=1", 1),
    ("four-k5", "digit-4-1.png", "k=5", 5),
    ("jpeg-seven", "digit-7.jpg", "", 3),
]

# JPEG decoders may round a pixel differently (Pillow's libjpeg against the plugin's decoder
# differ by one grey level in 6 of this image's 784 pixels), so JPEG samples allow one level.
JPEG_TOLERANCE = "[tolerance]\n# one grey level (1/255 = 0.0039): JPEG decoders may round a pixel differently\nabs = 0.004\n"


def tensor_json(array, row):
    """An f32 tensor as {"dtype", "shape", "values"}, `row` values to a line, each written as
    the shortest text that reads back as the same f32."""
    flat = [np.format_float_positional(v, unique=True, trim="0") for v in array.reshape(-1)]
    lines = [", ".join(flat[i:i + row]) for i in range(0, len(flat), row)]
    values = ",\n      ".join(lines)
    return (f'{{"dtype": "f32", "shape": {json.dumps(list(array.shape))},\n'
            f'     "values": [\n      {values}\n    ]}}')


def write_tensors(path, key, name, array, row, extra=""):
    with open(path, "w") as f:
        f.write(f'{{\n  "{key}": {{\n    "{name}": {tensor_json(array, row)}\n  }}{extra}\n}}\n')


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=1)
        f.write("\n")


def main():
    version = max(int(v) for v in os.listdir(MODEL) if v.isdigit())
    predict = tf.saved_model.load(os.path.join(MODEL, str(version))).signatures["serving_default"]
    for case, image, query, k in CASES:
        folder = os.path.join(OUT, case)
        os.makedirs(folder, exist_ok=True)
        ext = os.path.splitext(image)[1]
        body = os.path.join(folder, "request" + ext)
        shutil.copyfile(os.path.join(ROOT, "examples", "images", image), body)
        with open(os.path.join(folder, "sample.toml"), "w") as f:
            f.write(f"# examples/images/{image}, written by scripts/record_digits_samples.py\n")
            if query:
                f.write(f'query = "{query}"\n')
            mime = "image/jpeg" if ext == ".jpg" else "image/png"
            f.write(f'[headers]\ncontent-type = "{mime}"\n')
            if ext == ".jpg":
                f.write(JPEG_TOLERANCE)
        pixels = np.asarray(Image.open(body).convert("L"))
        assert pixels.shape == (28, 28), pixels.shape
        x = (pixels.astype(np.float32) / np.float32(255.0)).reshape(1, 28, 28, 1)
        context = json.dumps({"k": k, "model": "digits"}, separators=(",", ":"))
        write_tensors(os.path.join(folder, "pre.json"), "inputs", "image", x, 28,
                      f',\n  "context": {json.dumps(context)}')
        probs = predict(image=tf.constant(x))["probabilities"].numpy().astype(np.float32)
        write_tensors(os.path.join(folder, "outputs.json"), "outputs", "probabilities", probs, 10)
        row = probs[0]
        order = sorted(range(10), key=lambda i: (-row[i], i))[:k]
        predictions = [{"label": LABELS[i], "score": float(row[i])} for i in order]
        write_json(os.path.join(folder, "response.json"), {
            "status": 200,
            "headers": {"content-type": "application/json"},
            "json": {"model": "digits", "predictions": predictions},
        })
        print(f"{case}: {image} -> {[p['label'] for p in predictions]}")

    # The plugin's own answer to a bad query: a 400 before any model call.
    folder = os.path.join(OUT, "bad-k")
    os.makedirs(folder, exist_ok=True)
    shutil.copyfile(os.path.join(ROOT, "examples", "images", "digit-7-0.png"),
                    os.path.join(folder, "request.png"))
    with open(os.path.join(folder, "sample.toml"), "w") as f:
        f.write('# k out of range: preprocess answers 400 and the backend is never called.\n'
                'query = "k=11"\n')
    write_json(os.path.join(folder, "response.json"), {
        "status": 400,
        "json": {"error": "query parameter k must be a whole number from 1 to 10, not '11'"},
    })
    print("bad-k: 400")


if __name__ == "__main__":
    main()
