"""`python -m healthscore.cli`: the same as the `healthscore` command."""

from healthscore.cli import main

main()
