"""Training: the loop, runs (checkpoint, data, restore), ablations, tuning, export and int8 quantization."""
