"""Experiments: drivers that run many trainings of one recipe (ablate and its arms, compare, tune, crossfit,
lr-find, embed). They sit above ``augforge.train``, which trains one run."""
