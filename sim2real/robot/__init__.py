"""Plugging in a real robot: one shared instance, a safety layer, the transition log, export.

Between ``transfer`` (which runs on a robot session) and ``learning`` (export loads a policy).
"""
