"""The data stage: records in every format, lint with a quarantine, mining pairs from real code,
pushback, refusal and contamination pairs for controlled experiments.

May import: evaluate (the suites, to find eval-set leaks), pycheck, model and the leaf modules.
"""
