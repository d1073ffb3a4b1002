"""Figures and the figure report, drawn from analysis tables."""
