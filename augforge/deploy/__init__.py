"""Deployment of a trained run: export (TorchScript / ONNX / torch.export), int8 quantization (post-training
and quantization-aware) and the int8 targets it is measured on. Beside ``augforge.experiments``, above
``augforge.train``."""
