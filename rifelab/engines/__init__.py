"""Engines that run the network: the torch engine (dtypes, channels_last, compile, CUDA graphs), ONNX export, ONNX Runtime / OpenVINO / TensorRT backends."""
