"""The package's own fast solvers: KKT allocators for F3, the latency-energy front, minimum-energy arborescences."""
