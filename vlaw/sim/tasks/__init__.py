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


def make_task(name: str) -> Task:
    return TASKS[name]()


__all__ = ["TASKS", "Task", "Waypoint", "make_task"]
