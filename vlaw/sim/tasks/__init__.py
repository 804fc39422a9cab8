"""The five task families of the paper (§5.1, Appendix B) as MuJoCo scenes with experts."""

from vlaw.sim.tasks.base import Task, Waypoint
from vlaw.sim.tasks.draw import DrawTask
from vlaw.sim.tasks.erase import EraseTask
from vlaw.sim.tasks.open_book import OpenBookTask
from vlaw.sim.tasks.scoop import ScoopTask
from vlaw.sim.tasks.stack import StackTask

# Task family name (vlaw.config.TASKS) -> task class.
TASKS: dict[str, type[Task]] = {
    task.name: task for task in (StackTask, OpenBookTask, EraseTask, ScoopTask, DrawTask)
}


def make_task(name: str, layout_spread: float = 1.0) -> Task:
    """A fresh task whose resets draw `layout_spread` of its layout variety (`Task.uniform`)."""
    if not 0.0 <= layout_spread <= 1.0:
        raise ValueError(f"layout_spread must lie in [0, 1], got {layout_spread}")
    task = TASKS[name]()
    task.layout_spread = float(layout_spread)
    return task


__all__ = ["TASKS", "Task", "Waypoint", "make_task"]
