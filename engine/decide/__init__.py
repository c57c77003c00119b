"""What to do about it: regime, strategy, protective exits and position sizing.

Pure functions of indicators, positions and settings. Not here: the risk gate
(`engine.risk`), which may still say no, or sending orders (`engine.execution`).
"""
