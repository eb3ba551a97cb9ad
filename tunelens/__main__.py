"""`python -m tunelens ...`, which is also what `accelerate launch -m tunelens train ...` runs."""

from tunelens.cli import main

main()
