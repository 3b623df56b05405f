"""`python -m main.analysis <subcommand>`: see `main.analysis.cli`."""

from main.analysis.cli import main

if __name__ == "__main__":  # BirdNET's worker processes (spawned) import this module without running it
    main()
