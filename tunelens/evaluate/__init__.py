"""The eval stage: suites, the work plan, generation backends, results, scoring, summaries and reports;
the judge and its sandbox run generated code apart from the verdict.

May import: engine, retrieval, model, pycheck and the leaf modules.
"""
