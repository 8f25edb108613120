"""Training one run: the loop, losses, optimizers, schedules, metrics, checkpoints, restore, the run's data and
``run.train_recipe``. Experiments that train many runs live in ``augforge.experiments``; export and
quantization in ``augforge.deploy``."""
