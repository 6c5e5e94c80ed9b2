"""Solver backends behind one call, :func:`solve` (HiGHS, Gurobi, cvxpy, the fast KKT solvers, exact enumeration,
F4), each returning the one :class:`Result` with its :class:`Status`."""

from .registry import ACCEPTS, solve
from .result import Result, Status

__all__ = ["ACCEPTS", "Result", "Status", "solve"]
