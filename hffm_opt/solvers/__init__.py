"""Solver backends behind one call (HiGHS, Gurobi, cvxpy, the fast KKT allocator, exact enumeration)."""
