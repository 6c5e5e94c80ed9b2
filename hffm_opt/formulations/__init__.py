"""Optimisation programs (builders only, no solving): F1 placement, F2 relay tree, F3 allocation, F4 joint."""
