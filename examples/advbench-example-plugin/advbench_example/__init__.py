"""Example advbench plugin: a runtime defense and an attack, declared as entry points."""
