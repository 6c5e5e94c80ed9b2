"""Optimisation programs (builders only, no solving): F1 placement, F2 relay tree, F3 allocation, association (and
its relaxation behind F4's bound when the association is free), F4 joint."""
