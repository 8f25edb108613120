"""Pipelines: the offline build (source -> clean -> balance -> augment -> shards) and previews."""
