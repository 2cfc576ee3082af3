"""Running a grid: planner and runner, per-cell evaluation, artifacts, executors, workers, estimates."""
