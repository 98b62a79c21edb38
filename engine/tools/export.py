"""`models fetch`'s last step: FaceNet and MTCNN's three networks as ONNX graphs, checked, with their sha256.

Converted with tf2onnx from the weights already verified (facenet_keras.h5, and the P-/R-/O-net weights the
installed `mtcnn` package ships), then accepted only when, on real photos of the sample gallery,
  - FaceNet's ONNX vectors agree with Keras' within cosine 0.99999 (plain and mirror-averaged crops), and
  - MTCNN on ONNX Runtime (engine.models.mtcnn_onnx) finds the same faces as the package on TensorFlow: the same
    count per photo, boxes and landmarks within a pixel.
The manifest (models/onnx.json) records each graph's sha256 and the sha256 of the weights it came from;
engine.runtime.onnx opens a graph only when its bytes match. This module imports TensorFlow: fetch time only.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import FetchError
from engine.images import file_sha256, list_gallery_images, read_image
from engine.models.facenet_onnx import FACENET_INPUT_SIZE
from engine.runtime.onnx import FACENET_GRAPH, MANIFEST, MTCNN_GRAPHS

MIN_COSINE = 0.99999  # the project's tolerance for "the same vectors"
MAX_PIXELS_OFF = 1.0  # MTCNN boxes and landmarks
CHECK_EVERY = 4  # every 4th sample-gallery photo (30 of 118)
OPSET = 17
MTCNN_INPUTS = {"pnet": (None, None, None, 3), "rnet": (None, 24, 24, 3), "onet": (None, 48, 48, 3)}


def mtcnn_weights_sha256() -> str:
    """One sha256 over the three weight files the installed `mtcnn` package ships (and its version)."""
    digest = hashlib.sha256(f"mtcnn {importlib.metadata.version('mtcnn')}".encode())
    spec = importlib.util.find_spec("mtcnn")  # found, not imported: importing it would import TensorFlow
    if spec is None or not spec.submodule_search_locations:
        raise FetchError("the mtcnn package is not installed: pip install mtcnn")
    folder = Path(next(iter(spec.submodule_search_locations))) / "assets" / "weights"
    for stage in MTCNN_INPUTS:
        digest.update((folder / f"{stage}.lz4").read_bytes())
    return digest.hexdigest()


def graphs_current(models_dir: Path, sources: dict[str, str]) -> bool:
    """Whether the manifest names these sources and every graph still has the recorded sha256."""
    try:
        manifest = json.loads((models_dir / MANIFEST).read_text())
        graphs = manifest["graphs"]
        if manifest["sources"] != sources or set(graphs) != {FACENET_GRAPH, *MTCNN_GRAPHS.values()}:
            return False
        return all(
            (models_dir / name).is_file() and file_sha256(models_dir / name) == entry["sha256"]
            for name, entry in graphs.items()
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def export_onnx(models_dir: Path, gallery_dir: Path, log: Callable[[str], None] = print) -> None:
    """Write and check the four graphs and the manifest, unless they are already there for these weights."""
    weights = models_dir / "facenet_keras.h5"
    sources = {weights.name: file_sha256(weights), "mtcnn": mtcnn_weights_sha256()}
    if graphs_current(models_dir, sources):
        log(f"ONNX graphs ({models_dir / MANIFEST}) already present and verified")
        return
    try:
        from engine.runtime.quiet import import_quietly

        import_quietly("tensorflow")  # tf2onnx imports it: without its C++ start-up lines
        import tf2onnx  # noqa: F401
    except ImportError as error:
        raise FetchError(f"converting the networks to ONNX needs tf2onnx ({error}): pip install tf2onnx") from None
    started = time.perf_counter()
    images = _check_photos(gallery_dir)
    mtcnn_graphs, mtcnn_check = _convert_mtcnn(images)
    facenet_graph, facenet_check = _convert_facenet(weights, images)
    graphs = {FACENET_GRAPH: facenet_graph, **{MTCNN_GRAPHS[stage]: graph for stage, graph in mtcnn_graphs.items()}}
    entries = {}
    for name, graph in graphs.items():
        partial = models_dir / f"{name}.part"
        partial.write_bytes(graph)
        partial.replace(models_dir / name)
        entries[name] = {"sha256": hashlib.sha256(graph).hexdigest(), "bytes": len(graph)}
    manifest = {
        "format": 1,
        "sources": sources,
        "graphs": entries,
        "checked": {**facenet_check, **mtcnn_check},
        "converter": f"tf2onnx {importlib.metadata.version('tf2onnx')}, opset {OPSET}",
    }
    partial = models_dir / f"{MANIFEST}.part"
    partial.write_text(json.dumps(manifest, indent=2) + "\n")
    partial.replace(models_dir / MANIFEST)
    log(
        f"ONNX graphs written to {models_dir} and checked against Keras in {time.perf_counter() - started:.0f} s: "
        f"FaceNet min cosine {facenet_check['facenet_min_cosine']:.7f} on {facenet_check['facenet_faces']} faces; "
        f"MTCNN boxes within {mtcnn_check['mtcnn_max_pixels_off']:.4f} px on {mtcnn_check['mtcnn_photos']} photos"
    )


def _check_photos(gallery_dir: Path) -> list[np.ndarray]:
    """Every CHECK_EVERY-th sample photo, shrunk to at most 640 px as detection sees it."""
    from PIL import Image

    photos = list_gallery_images(gallery_dir)[::CHECK_EVERY]
    if not photos:
        raise FetchError(f"no sample photos in {gallery_dir} to check the ONNX graphs on")
    images = []
    for path in photos:
        image = read_image(path, max_bytes=10**8, max_pixels=10**8)
        scale = min(1.0, 640 / max(image.shape[:2]))
        if scale < 1.0:
            size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
            image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
        images.append(image)
    return images


def _to_onnx(function: Any, signature: Any) -> bytes:
    import tf2onnx

    proto, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=OPSET)
    return proto.SerializeToString()


def _session(graph: bytes) -> Any:
    import onnxruntime

    return onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])


def _convert_mtcnn(images: list[np.ndarray]) -> tuple[dict[str, bytes], dict]:
    from engine.runtime.quiet import import_quietly

    tf = import_quietly("tensorflow")
    from mtcnn import MTCNN

    from engine.models.mtcnn_onnx import MTCNNSessions, OnnxMTCNN

    package = MTCNN(device="CPU:0")
    graphs = {}
    for stage, model in zip(MTCNN_INPUTS, (stage._model for stage in package.stages), strict=True):
        signature = [tf.TensorSpec(MTCNN_INPUTS[stage], tf.float32, name="input")]
        graphs[stage] = _to_onnx(tf.function(lambda x, model=model: model(x), input_signature=signature), signature)
    ours = OnnxMTCNN(MTCNNSessions(**{stage: _session(graph) for stage, graph in graphs.items()}))
    worst = 0.0
    for number, image in enumerate(images):
        expected = np.asarray(
            package.detect_faces([image], output_type="numpy", box_format="xyxy", min_face_size=20), np.float64
        ).reshape(-1, 16)
        found = ours.detect_faces([image], min_face_size=20)
        if len(found) != len(expected):
            raise FetchError(
                f"MTCNN on ONNX Runtime finds {len(found)} faces in sample photo {number}, the mtcnn package "
                f"{len(expected)}: the converted graphs are not accepted"
            )
        if len(found):
            off = float(np.abs(found[:, [1, 2, 3, 4, *range(6, 16)]] - expected[:, [1, 2, 3, 4, *range(6, 16)]]).max())
            if off > MAX_PIXELS_OFF:
                raise FetchError(
                    f"MTCNN on ONNX Runtime puts a box or landmark {off:.2f} px off in sample photo {number}"
                )
            worst = max(worst, off)
    return graphs, {"mtcnn_photos": len(images), "mtcnn_max_pixels_off": worst}


def _convert_facenet(weights: Path, images: list[np.ndarray]) -> tuple[bytes, dict]:
    from engine.runtime.quiet import import_quietly

    tf = import_quietly("tensorflow")

    from engine.models.align import face_crop
    from engine.models.facenet_keras import FaceNetEmbedder
    from engine.models.facenet_onnx import embed_crops
    from engine.models.mtcnn import FaceDetector

    keras_net = FaceNetEmbedder(weights, xla=False)
    keras_net.load()
    model: Any = keras_net._model  # the Keras network just built from the verified h5
    signature = [tf.TensorSpec((None, FACENET_INPUT_SIZE, FACENET_INPUT_SIZE, 3), tf.float32, name="input")]
    graph = _to_onnx(tf.function(lambda x: model(x, training=False), input_signature=signature), signature)

    detector = FaceDetector(max_side=640, min_face_size=20, confidence=0.9, fallback_confidence=0.85, retry_padding=0.1)
    found = [
        face_crop(image, faces[0], size=FACENET_INPUT_SIZE, margin=0.1, alignment="rotate")
        for image, faces in zip(images, detector.detect(images), strict=True)
        if faces
    ]
    if len(found) < len(images) // 2:
        raise FetchError(f"only {len(found)} faces found in {len(images)} sample photos to check FaceNet's graph on")
    crops = np.stack(found)
    session = _session(graph)
    name = session.get_inputs()[0].name

    def onnx_forward(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {name: batch.astype(np.float32)})[0]

    worst = 1.0
    for flip in (False, True):
        cosines = np.sum(
            keras_net.embed(crops, flip=flip) * embed_crops(onnx_forward, crops, batch_size=32, flip=flip), axis=1
        )
        worst = min(worst, float(cosines.min()))
    if worst < MIN_COSINE:
        raise FetchError(
            f"FaceNet's ONNX graph gives vectors at cosine {worst:.7f} from Keras' (needs {MIN_COSINE}): not accepted"
        )
    return graph, {"facenet_faces": len(crops), "facenet_min_cosine": worst}
