"""tomoflow.weights: the shipped network weights, their model cards, and the load gate
(:mod:`tomoflow.weights.card`)."""
