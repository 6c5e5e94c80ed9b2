"""Optuna closes the loop: studies over the outer choices (scheduler, E_agg, deadline, learning rate, tau) scored by
trained accuracy within a simulated budget."""

from .study import *  # noqa: F401,F403  (split along its four jobs next)
