"""One settings object for the engine, read from the environment or `.env`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# The registered models' names (engine.backends.MODEL_NAMES), spelt out for pydantic and mypy: the backends import
# this module, so the type cannot be built from their registry. A unit test checks that both list the same names.
ModelName = Literal["facenet", "vgg16"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class EngineSettings(BaseSettings):
    """Paths, detection and search parameters. Every field maps to an env var of the same name."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    data_dir: Path = Field(PROJECT_ROOT / "data", description="Indexes, database and reports live here.")
    models_dir: Path = Field(PROJECT_ROOT / "models", description="Where weights are fetched to.")
    gallery_dir: Path | None = Field(
        None, description="Gallery root (one folder per person). Default: DATA_DIR/sample-gallery."
    )
    gallery_layout: Literal["people", "photos"] = Field(
        "people",
        description="Where names come from. 'people': one folder per person (the folder is the name), the most "
        "prominent face of each photo indexed (labelled galleries, LFW, the sample gallery). 'photos': photos at any "
        "depth, every face indexed, no name from folders (event and family collections). A store built in one layout "
        "is rebuilt, never mixed, when indexed in the other.",
    )

    # detection
    detect_max_side: int = Field(640, ge=64, description="Longest side a photo is scaled to for detection.")
    min_face_size: int = Field(
        20, ge=20, description="Smallest face (pixels) looked for; photos are scaled so it becomes 20 px for MTCNN."
    )
    face_confidence: float = Field(0.90, ge=0.0, le=1.0, description="Minimum MTCNN confidence for a face.")
    face_fallback_confidence: float = Field(
        0.85,
        ge=0.0,
        le=1.0,
        description="A photo with no face at FACE_CONFIDENCE gets its single most confident face from this level on "
        "(1.0: off). Chosen on one fold of LFW people, checked on the other (benchmarks/tune_lfw.py --fallbacks).",
    )
    face_retry_padding: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="A photo with no face at FACE_CONFIDENCE after the normal passes is searched once more framed by "
        "this share of its sides (edge pixels): MTCNN misses some faces that fill the frame or touch its edge (0: off).",
    )
    # photos layout: event photos are 12-24 Mpx with faces of 60-150 px (see README, "Photos layout")
    photos_detect_max_side: int = Field(
        2048,
        ge=640,
        description="Photos layout: longest side a gallery photo is scaled to for detection (queries keep DETECT_MAX_SIDE).",
    )
    photos_min_face_size: int = Field(
        40,
        ge=20,
        description="Photos layout: faces whose box's longer side is under this many pixels of the photo are not "
        "indexed (too small to embed well: FaceNet's crop is 160 px).",
    )
    face_margin: float = Field(
        0.1, ge=0.0, le=1.0, description="Margin added around a face box, as a share of its size."
    )
    face_alignment: Literal["template", "rotate", "none"] = Field(
        "rotate",
        description="How face crops are aligned: 'template' maps the five MTCNN landmarks onto a canonical face by a "
        "similarity transform, 'rotate' only levels the eyes, 'none' crops the box as it is.",
    )
    flip_queries: bool = Field(True, description="Average each query face's embedding with its mirror image's.")
    flip_gallery: bool = Field(
        False, description="The same for gallery faces (doubles indexing time, no measured gain)."
    )
    index_all_faces: bool = Field(
        False, description="Index every face of a gallery photo, not only the most prominent."
    )
    detect_batch_size: int = Field(16, ge=1, description="Images per MTCNN batch when indexing.")
    embed_batch_size: int = Field(
        8,
        ge=1,
        description="Faces per FaceNet batch. On ONNX Runtime, 2 cores, 8 to 64 take about the same time a face "
        "(14.3-15.2 ms); an indexing process's peak while embedding is 30 MB lower at 8 than at 16, 32 adds 42 MB to "
        "the peak of loading the session, 64 172 MB (benchmarks/embed_batch.py).",
    )
    xla: bool = Field(
        True, description="Run query-sized FaceNet batches through XLA (faster on CPU, compiled once per size)."
    )

    # runtime, devices and parallel indexing
    engine_runtime: Literal["auto", "onnx", "keras"] = Field(
        "auto",
        description="What runs FaceNet and MTCNN: 'onnx' (ONNX Runtime; never imports TensorFlow), 'keras' "
        "(TensorFlow), or 'auto': onnx when onnxruntime is installed and MODELS_DIR/onnx.json is there (written "
        "by `python -m engine models fetch`), else keras. Both give the same vectors (checked at fetch time), so "
        "an index built on one is searched on the other.",
    )
    device: Literal["auto", "gpu", "cpu"] = Field(
        "auto", description="Embedding device: a GPU when TensorFlow sees one (auto), or the CPU."
    )
    index_workers: int | None = Field(
        None,
        ge=0,
        description="Processes decoding and detecting while indexing (0: in the indexing process). Default: one per core (at most 8), 0 on up to 2 cores.",
    )
    index_ray: str | None = Field(
        None, description="Index on Ray: 'local' starts a local cluster, else a cluster address (host:port, ray://...)."
    )
    ray_num_cpus: int | None = Field(None, ge=1, description="CPUs a local Ray cluster may use (default: all cores).")
    ray_object_store_mb: int = Field(256, ge=75, description="Object store size of a local Ray cluster (MB).")
    ray_ship_images: bool = Field(
        False, description="Send each image's bytes to the Ray actors instead of its path (gallery not on the nodes)."
    )

    # input limits
    max_image_bytes: int = Field(20_000_000, ge=1, description="Largest image file accepted.")
    max_image_pixels: int = Field(50_000_000, ge=1, description="Largest decoded image (pixels); Pillow's bomb check.")
    heap_mmap_threshold_mb: int = Field(
        16,
        ge=0,
        le=32,
        description="Long-running processes (the bot, `python -m engine index`, index workers): heap blocks of this "
        "many MB and more are handed back to the system when freed (glibc's M_MMAP_THRESHOLD), so decoded camera "
        "photos are not kept resident; 0 leaves glibc's default (it rises to 32 MB). No effect outside glibc.",
    )

    # index and store
    vector_store_uri: str | None = Field(
        None,
        description="Where vectors live: unset = the local store under DATA_DIR/index; a path ending in .db = Milvus Lite; "
        "http(s)://host:19530 = a Milvus server shared by several machines.",
    )
    index_commit_every: int = Field(
        1000, ge=1, description="Photos embedded between two durable commits of an index run."
    )
    index_commit_interval_s: float = Field(10.0, gt=0, description="...or seconds between them, whichever comes first.")
    index_lock_wait_s: float = Field(
        3600.0, ge=0, description="How long an index run waits for another one's writer lock."
    )
    index_refresh_s: float = Field(
        2.0, gt=0, description="How often a running service looks for index versions other processes wrote."
    )
    watch_poll_s: float = Field(
        0.0,
        ge=0,
        description="A watched gallery (WATCH_GALLERY, `index --watch`): 0 = inotify events; more = scan the folder "
        "every this many seconds instead (network mounts such as NFS or SMB, where inotify sees no other machine's writes).",
    )
    watch_settle_s: float = Field(
        2.0,
        gt=0,
        description="A watched gallery's new or changed file is read once its size and mtime have held still this "
        "long (an FTP or sync upload is never read half-written).",
    )
    watch_batch: int = Field(
        200,
        ge=1,
        description="A watched gallery's index run reads at most this many photos (in path order), then commits, "
        "groups the faces into persons and tells the bot (deliveries); the next run goes on with the rest of a burst.",
    )

    # search
    default_k: int = Field(5, ge=1, description="Matches returned per face.")
    max_k: int = Field(50, ge=1, description="Largest k accepted.")
    ann_threshold: int = Field(
        50_000, ge=1, description="Faces from which the local store's sealed segment is an HNSW graph."
    )
    hnsw_m: int = Field(16, ge=4, description="HNSW graph degree (local store and Milvus).")
    hnsw_ef_search: int = Field(96, ge=8, description="HNSW search breadth (local store and Milvus).")
    open_set_threshold: float | None = Field(
        None,
        description="Score from which a face is named as a gallery person (else: not in the gallery). "
        "Default: the model's own (its backend's default_identity; FaceNet's calibrated on LFW development data).",
    )
    vgg16_pca_components: int = Field(256, ge=0, description="PCA size for VGG16 features (0 disables PCA).")
    vgg16_random_weights: bool = Field(False, description="Tests only: build VGG16 with random weights.")

    # people (persons the faces belong to: engine/people)
    cluster_threshold: float = Field(
        0.7,
        ge=-1.0,
        le=1.0,
        description="Cosine similarity from which two faces count as close when grouping faces into persons "
        "(chosen on one fold of LFW development people: benchmarks/bench_cluster.py).",
    )
    cluster_min_faces: int = Field(
        2, ge=2, description="Close faces (itself included) a face needs to found a new person."
    )
    cluster_neighbours: int = Field(
        10, ge=1, le=1000, description="Neighbours asked of the store per face when grouping."
    )
    cluster_regroup_growth: float = Field(
        0.5,
        ge=0.0,
        description="An index run groups every face again when the faces have grown by this share since the "
        "last full grouping (persons founded apart in earlier runs come together); 0: only on request (people recluster).",
    )

    @property
    def people_names(self) -> Literal["folders", "clusters"]:
        """Where persons come from, by layout: each person folder is a named person ('folders', the people layout),
        or faces are grouped into persons as they are indexed and named by hand ('clusters', the photos layout)."""
        return "folders" if self.gallery_layout == "people" else "clusters"

    def resolved_gallery(self) -> Path:
        """The gallery folder to index when none is given."""
        return self.gallery_dir if self.gallery_dir is not None else self.data_dir / "sample-gallery"

    def index_dir(self, model: str) -> Path:
        return self.data_dir / "index" / model

    @property
    def facenet_weights(self) -> Path:
        return self.models_dir / "facenet_keras.h5"

    @property
    def vgg16_weights(self) -> Path:
        return self.models_dir / "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
