"""`python -m main.demo`: see `main.demo`."""

from main.demo import main

main()
