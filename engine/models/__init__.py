"""The networks, one file each with its own pre- and post-processing: FaceNet (ONNX Runtime and Keras), MTCNN (the
`mtcnn` package and its ONNX graphs), the aligned crops they share, and VGG16. Nothing here knows about stores,
indexes or the command line."""
