"""python -m main.compat inspect|convert ... (see main.compat.migrate)."""

from main.compat.migrate import main

main()
