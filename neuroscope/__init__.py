"""Activation-based neuron analysis: dataset, one streaming pass, recomputation and HTML pages."""
