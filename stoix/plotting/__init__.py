"""Comparison plots and aggregate statistics over Stoix runs (``python -m stoix.plotting``)."""

from stoix.plotting.plots import PlotOptions, PlotReport, ResultsError, SummaryRow, make_plots

__all__ = ["PlotOptions", "PlotReport", "ResultsError", "SummaryRow", "make_plots"]
