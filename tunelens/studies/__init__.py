"""Studies: the case study's open questions answered with the real stages, one module per question.

Each study is a library function that takes a config and a run directory and writes summary.json and
a self-contained report.html there; `tunelens study <name>` is its thin command.
"""
