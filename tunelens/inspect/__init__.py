"""Instruments that look inside a model's decisions: trace (top-K at every step, decision points),
compare (one continuation scored under several conditions), levers (what moves a decision point),
propensity (how strongly a model leans to a kind of opening), context_check (examples about to be
injected into a prompt, scored first).

May import: engine, retrieval, model, data, pycheck, train (nothing does), evaluate and the leaf modules.
"""
