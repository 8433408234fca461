"""The Hydra application on top of the library: CLI, config schemas, build, tasks, api.

Nothing in the library (``losses``, ``neighbours``, ``data``, ``models``, ``methods``,
``monitors``, ``utils``) imports from here.
"""
