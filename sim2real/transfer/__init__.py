"""Carrying a pretrained policy to a target: the four cases, the strategy registry, the transfer run.

Uses ``learning`` and ``worlds``; never imports the top level (study, report, cli).
"""
