"""Activation-based neuron analysis: dataset, one streaming pass, recomputation and HTML pages.

The numbered scripts (`a_dataset.py` ... `g_connections.py`) sit here with the flags they share (`cli.py`) and the
constants (`constants.py`); the library is in one subpackage per stage, in the order in which they may import each
other: a stage imports only from stages before it, and only the modules its `INTERFACE` names.
"""

STAGES = ("core", "data", "activation_pass", "recompute", "summary", "view", "classes", "connections", "probe")
