"""hffm-opt: plan, optimise and compare hierarchical federated foundation-model training over wireless networks.

Flow: Scenario (:mod:`.network`) -> formulations / schedulers -> solvers -> Plan -> evaluate() -> Metrics;
learners train under a Plan; analysis and tuning compose them; see ARCHITECTURE.md.
"""

from ._version import __version__
from .errors import HffmError, PlanError, ScenarioError, SchedulerError
from .evaluate import Metrics, evaluate
from .network import ModuleSpec, Scenario, load_scenario, save_scenario
from .plan import Plan
from .schedulers import available, get_scheduler, register, schedule, scheduler_options
from .solvers import Result, Status, solve

__all__ = ["HffmError", "Metrics", "ModuleSpec", "Plan", "PlanError", "Result", "Scenario", "ScenarioError",
           "SchedulerError", "Status", "available", "evaluate", "get_scheduler", "load_scenario", "register",
           "save_scenario", "schedule", "scheduler_options", "solve", "__version__"]
