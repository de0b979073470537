"""SpiNNaker support: a project-owned sPyNNaker workspace, virtual-board mapping, the resource planner."""
