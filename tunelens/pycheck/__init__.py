"""Python source checks shared by data lint and eval scoring: a real Python 3 parse and Python 2 idioms.

May import: nothing of tunelens but the leaf modules.
Modules: check (check_python, the verdict), rules (the idioms), tokens (a tokenizer-level scan).
"""
