"""F4, the joint plan: cluster decomposition (:mod:`.decomposition`), cluster structures (:mod:`.structures`), the
re-parenting descent of large relay trees (:mod:`.descent`), the continuous inner problem per cluster
(:mod:`.cluster`) and the proven lower bounds (:mod:`.bounds`; :mod:`.association_bound` with the association
free)."""
