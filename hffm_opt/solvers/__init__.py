"""Solver backends behind one call, :func:`solve` (HiGHS, Gurobi, cvxpy, the fast KKT solvers, exact enumeration)."""

from .facade import ACCEPTS, solve
from .result import SolveResult

__all__ = ["ACCEPTS", "SolveResult", "solve"]
