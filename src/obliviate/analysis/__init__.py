"""Analyses of a model's representations (e.g. FALCON's mutual-information layer selection)."""

from .mi import LayerSelection, MIEstimate, kde_entropy, mutual_information, plot_selection, select_from_states, select_layer

__all__ = ["LayerSelection", "MIEstimate", "kde_entropy", "mutual_information", "plot_selection",
           "select_from_states", "select_layer"]
