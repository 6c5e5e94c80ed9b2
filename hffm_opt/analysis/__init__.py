"""What users run to compare and measure: scheduler comparisons over seeds, the paper's Table I, and benchmarks
(schedulers, F3 allocation, dynamic re-solves, the learner)."""
