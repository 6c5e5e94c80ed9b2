"""The network being planned: scenario objects, all link physics (channel), D2D topology and relay trees,
scenario generators and file formats (JSON/TOML/the prototype's), the plausible ranges and size limits of a
scenario (limits) and the strict reader and field checks of every document the package reads (documents)."""

from ..errors import ScenarioError
from .io import load_scenario, save_scenario
from .scenario import ModuleSpec, Scenario

__all__ = ["ModuleSpec", "Scenario", "ScenarioError", "load_scenario", "save_scenario"]
