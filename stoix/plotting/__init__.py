"""Comparison plots and aggregate statistics over Stoix runs (``python -m stoix.plotting``)."""

from stoix.plotting.plots import make_plots
from stoix.plotting.results import PlotOptions, PlotReport, ResultsError, SummaryRow

__all__ = ["PlotOptions", "PlotReport", "ResultsError", "SummaryRow", "make_plots"]
