#!/usr/bin/env python3
"""Train the example `digits` model and regenerate everything derived from it.

Generated (and committed) by this script -- rerun it to regenerate them:
  models/digits/1/            SavedModel, TF Serving layout (seed 1)
  models/digits/2/            SavedModel, same architecture retrained with seed 2
  plugins/digits/model.onnx   version 2 converted to ONNX (same weights) for the embedded
                              `onnx` backend; its model_version is 2, its batch dim symbolic
  models/digits/labels.txt    class names "0".."9", one per line
  examples/images/digit-<label>-<n>.png   held-out samples, 28x28 8-bit grayscale
  examples/images/digit-7.jpg             one held-out 7 as a grayscale JPEG

Data: scikit-learn's bundled 8x8 digits (sklearn.datasets.load_digits, ships offline),
values 0..16, white digit on black. Each image is scaled to 0..255 uint8, upscaled to
28x28 with PIL bilinear resize and divided by 255, so training data is exactly what a
decoded PNG of the example images gives.

Model: a small CNN written with plain TensorFlow ops and variables (no Keras, so the
exported graph is tiny): conv3x3(8)+relu+maxpool, conv3x3(16)+relu+maxpool, dense(32)+relu,
dense(10). Trained with Adam for a few epochs; seeded; well under a minute on 2 CPU cores.

Serving signature `serving_default`:
  inputs:  image          float32 [-1, 28, 28, 1]   values in [0, 1]
  outputs: probabilities  float32 [-1, 10]          softmax
           label          int64   [-1]              argmax

Usage: python scripts/train_digits.py [--out-root REPO_ROOT] [--epochs N]
       python scripts/train_digits.py --onnx-only   # convert the committed SavedModel, no training

The ONNX export needs tf2onnx, which is not in scripts/requirements-e2e.txt (the test venv
doesn't need it). Put it beside that venv without touching it:
  venv=$(scripts/venv.sh | tail -n 1)
  "$venv/bin/pip" install --no-deps --target ~/.cache/infergate/onnx-tools -r scripts/requirements-onnx.txt
  PYTHONPATH=~/.cache/infergate/onnx-tools "$venv/bin/python" scripts/train_digits.py --onnx-only
"""

import argparse
import os
import shutil
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 28
NUM_CLASSES = 10
SPLIT_SEED = 0
SAMPLES_PER_CLASS = 2
# The SavedModel version the ONNX file is converted from: the latest, which TF Serving serves
# for a request that names no version, so both backends answer the same by default.
ONNX_VERSION = 2
ONNX_OPSET = 17


def upscale(img8x8):
    """8x8 float (0..16) -> 28x28 uint8 via PIL bilinear resize."""
    u8 = np.clip(np.round(img8x8 * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(u8, mode="L").resize((SIZE, SIZE), Image.BILINEAR), dtype=np.uint8)


def load_data():
    digits = load_digits()
    images = np.stack([upscale(im) for im in digits.images])  # [N,28,28] uint8
    labels = digits.target.astype(np.int64)
    idx = np.arange(len(labels))
    train_idx, test_idx = train_test_split(
        idx, test_size=0.2, random_state=SPLIT_SEED, stratify=labels)
    return images, labels, train_idx, test_idx


def to_float(u8):
    return (u8.astype(np.float32) / 255.0)[..., None]


def init_params(seed):
    rng = np.random.default_rng(seed)

    def he(shape, fan_in):
        return tf.Variable(rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape).astype(np.float32))

    def zeros(n):
        return tf.Variable(np.zeros([n], np.float32))

    return {
        "conv1_w": he([3, 3, 1, 8], 9), "conv1_b": zeros(8),
        "conv2_w": he([3, 3, 8, 16], 72), "conv2_b": zeros(16),
        "fc1_w": he([7 * 7 * 16, 32], 7 * 7 * 16), "fc1_b": zeros(32),
        "fc2_w": he([32, NUM_CLASSES], 32), "fc2_b": zeros(NUM_CLASSES),
    }


def forward(p, x):
    x = tf.nn.relu(tf.nn.conv2d(x, p["conv1_w"], 1, "SAME") + p["conv1_b"])
    x = tf.nn.max_pool2d(x, 2, 2, "VALID")  # 14x14x8
    x = tf.nn.relu(tf.nn.conv2d(x, p["conv2_w"], 1, "SAME") + p["conv2_b"])
    x = tf.nn.max_pool2d(x, 2, 2, "VALID")  # 7x7x16
    x = tf.reshape(x, [-1, 7 * 7 * 16])
    x = tf.nn.relu(tf.matmul(x, p["fc1_w"]) + p["fc1_b"])
    return tf.matmul(x, p["fc2_w"]) + p["fc2_b"]


def train(seed, x_train, y_train, epochs, batch=32, lr=3e-3):
    tf.random.set_seed(seed)
    params = init_params(seed)
    names = sorted(params)
    var_list = [params[n] for n in names]
    m = [tf.Variable(tf.zeros_like(v)) for v in var_list]
    v2 = [tf.Variable(tf.zeros_like(v)) for v in var_list]
    step = tf.Variable(0.0)
    b1, b2, eps = 0.9, 0.999, 1e-8

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            logits = forward(params, xb)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits))
        grads = tape.gradient(loss, var_list)
        step.assign_add(1.0)
        lr_now = lr * tf.maximum(0.1, 1.0 - step / total_steps)  # linear decay
        for var, g, mi, vi in zip(var_list, grads, m, v2):
            mi.assign(b1 * mi + (1 - b1) * g)
            vi.assign(b2 * vi + (1 - b2) * tf.square(g))
            mhat = mi / (1 - tf.pow(b1, step))
            vhat = vi / (1 - tf.pow(b2, step))
            var.assign_sub(lr_now * mhat / (tf.sqrt(vhat) + eps))
        return loss

    rng = np.random.default_rng(seed)
    n = len(y_train)
    total_steps = float(epochs * ((n + batch - 1) // batch))
    for epoch in range(epochs):
        order = rng.permutation(n)
        losses = []
        for i in range(0, n, batch):
            sel = order[i:i + batch]
            losses.append(float(train_step(tf.constant(x_train[sel]), tf.constant(y_train[sel]))))
        print(f"  seed {seed} epoch {epoch + 1}/{epochs} loss {np.mean(losses):.4f}", flush=True)
    return params


def accuracy(params, x, y):
    pred = np.argmax(forward(params, tf.constant(x)).numpy(), axis=1)
    return float(np.mean(pred == y))


def export(params, path):
    module = tf.Module()
    module.params = params  # tracked so the variables are saved

    # A free function (not a method): TF 2.21 rejects input_signature on methods here.
    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 1], tf.float32, name="image")])
    def serving_default(image):
        probabilities = tf.nn.softmax(forward(params, image), axis=-1)
        label = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        return {"probabilities": probabilities, "label": label}

    module.serving_default = serving_default
    if os.path.exists(path):
        shutil.rmtree(path)
    tf.saved_model.save(module, path, signatures={"serving_default": serving_default})


def export_onnx(saved_model, out, version):
    """Converts a SavedModel's serving_default signature to ONNX with tf2onnx.

    Inputs and outputs keep the signature's names. Dim 0 of each is renamed to one symbol,
    `batch` (tf2onnx gives each an unrelated `unk__N`), so the engine can see that a batch of
    N images gives N rows. The file's model_version is the SavedModel's version.
    """
    import subprocess

    import onnx  # noqa: E402 -- only needed here (scripts/requirements-onnx.txt)

    tmp = out + ".tmp"
    subprocess.run(
        [sys.executable, "-m", "tf2onnx.convert", "--saved-model", saved_model,
         "--signature_def", "serving_default", "--opset", str(ONNX_OPSET), "--output", tmp],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    model = onnx.load(tmp)
    for value in list(model.graph.input) + list(model.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = "batch"
    model.model_version = version
    model.doc_string = f"models/digits/{version} converted by scripts/train_digits.py"
    onnx.checker.check_model(model)
    onnx.save(model, tmp)
    os.replace(tmp, out)  # atomically, so a watching gateway never reads half a file
    print(f"  exported {out} ({os.path.getsize(out)} bytes) from {saved_model}")


def check_onnx_agrees(saved_model, onnx_path, x):
    """The ONNX file and the SavedModel give the same probabilities (within 1e-5) on x."""
    import onnx.reference  # noqa: E402

    want = tf.saved_model.load(saved_model).signatures["serving_default"](
        image=tf.constant(x))["probabilities"].numpy()
    got = onnx.reference.ReferenceEvaluator(onnx_path).run(["probabilities"], {"image": x})[0]
    diff = float(np.max(np.abs(want - got)))
    print(f"  ONNX vs SavedModel on {len(x)} images: max |diff| {diff:.2e}")
    if diff > 1e-5:
        raise SystemExit(f"{onnx_path} disagrees with {saved_model}: {diff}")


def dir_size(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-root", default=REPO_ROOT, help="where models/ and examples/ go")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--onnx-only", action="store_true",
                    help="only convert the committed SavedModel to ONNX (no training)")
    args = ap.parse_args()

    t0 = time.time()
    images, labels, train_idx, test_idx = load_data()
    x_all = to_float(images)
    x_train, y_train = x_all[train_idx], labels[train_idx]
    x_test, y_test = x_all[test_idx], labels[test_idx]
    print(f"digits: {len(train_idx)} train, {len(test_idx)} test, {SIZE}x{SIZE} grayscale")

    model_dir = os.path.join(args.out_root, "models", "digits")
    onnx_path = os.path.join(args.out_root, "plugins", "digits", "model.onnx")
    saved_onnx_source = os.path.join(model_dir, str(ONNX_VERSION))
    if args.onnx_only:
        export_onnx(saved_onnx_source, onnx_path, ONNX_VERSION)
        check_onnx_agrees(saved_onnx_source, onnx_path, x_test)
        print(f"done in {time.time() - t0:.1f}s")
        return

    os.makedirs(model_dir, exist_ok=True)
    for version, seed in ((1, 1), (2, 2)):
        params = train(seed, x_train, y_train, args.epochs)
        acc = accuracy(params, x_test, y_test)
        print(f"version {version} (seed {seed}): test accuracy {acc:.4f}", flush=True)
        out = os.path.join(model_dir, str(version))
        export(params, out)
        print(f"  exported {out} ({dir_size(out)} bytes)")

    export_onnx(saved_onnx_source, onnx_path, ONNX_VERSION)
    check_onnx_agrees(saved_onnx_source, onnx_path, x_test)

    with open(os.path.join(model_dir, "labels.txt"), "w") as f:
        f.write("".join(f"{i}\n" for i in range(NUM_CLASSES)))

    # Held-out samples: the first SAMPLES_PER_CLASS test images of each class, as PNG.
    img_dir = os.path.join(args.out_root, "examples", "images")
    os.makedirs(img_dir, exist_ok=True)
    for name in os.listdir(img_dir):
        if name.startswith("digit-") and name.endswith((".png", ".jpg")):
            os.remove(os.path.join(img_dir, name))
    for cls in range(NUM_CLASSES):
        picks = [i for i in test_idx if labels[i] == cls][:SAMPLES_PER_CLASS]
        for n, i in enumerate(picks):
            Image.fromarray(images[i], mode="L").save(
                os.path.join(img_dir, f"digit-{cls}-{n}.png"), optimize=True)
    # One JPEG: a held-out 7 not already used as a PNG.
    sevens = [i for i in test_idx if labels[i] == 7]
    Image.fromarray(images[sevens[SAMPLES_PER_CLASS]], mode="L").save(
        os.path.join(img_dir, "digit-7.jpg"), quality=95)

    # Sanity check of the exported artifact on the written files.
    loaded = tf.saved_model.load(os.path.join(model_dir, "1")).signatures["serving_default"]
    correct, names = 0, sorted(os.listdir(img_dir))
    names = [n for n in names if n.startswith("digit-")]
    for name in names:
        px = np.asarray(Image.open(os.path.join(img_dir, name)).convert("L"), np.float32) / 255.0
        label = int(loaded(image=tf.constant(px.reshape(1, SIZE, SIZE, 1)))["label"].numpy()[0])
        correct += label == int(name.split("-")[1].split(".")[0])
    print(f"version 1 on the {len(names)} example images: {correct} correct")

    total = dir_size(model_dir) + dir_size(img_dir)
    print(f"models + images: {total} bytes; done in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    sys.exit(main())
