"""hffm-opt: plan, optimise and compare hierarchical federated foundation-model training over wireless networks.

Flow: Scenario -> schedulers/formulations -> Plan -> evaluate() -> Metrics; learners train under a Plan.
"""

from .evaluate import Metrics, evaluate
from .plan import Plan, PlanError
from .scenario import ModuleSpec, Scenario, ScenarioError
from .scenario_io import load_scenario, save_scenario
from .schedulers import available, get_scheduler, register, schedule
from . import heuristics, optimizing  # noqa: E402,F401  (register the greedy, random and optimising schedulers)

__version__ = "0.1.0"
__all__ = ["Metrics", "ModuleSpec", "Plan", "PlanError", "Scenario", "ScenarioError", "available", "evaluate",
           "get_scheduler", "load_scenario", "register", "save_scenario", "schedule", "__version__"]
