"""Training: models (this package's `models`), and later schedules, regularizers and the loop."""
