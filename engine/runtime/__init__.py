"""Where the networks run: ONNX Runtime sessions on verified graphs and the manifest, the embedding device, and
quiet imports of the libraries that print at import time."""
